"""Applying recipes to one live model in place, as fast as the search loop needs.

Inputs stay on the compute device for the whole search. Task vectors (model - base) are
computed once; task-arithmetic and linear candidates are then a copy and one fused
multiply-add per model, written straight into the live parameters. Tensors whose inputs and
parameters did not change since the previous candidate are skipped, so a genome that moves
one layer group only rewrites that group. Every other method goes through the planner.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch

from evomerge.errors import ModelError
from evomerge.io.checkpoint import TensorSource
from evomerge.merge.planner import MergePlan, TensorTask
from evomerge.recipe import MergeRecipe


def _key(task: TensorTask, method: str) -> tuple[Any, ...]:
    return (method, tuple(task.inputs), task.base, tuple(sorted(task.shared.items())),
            tuple((k, tuple(v)) for k, v in sorted(task.per_model.items())), task.seed)


class LiveMerger:
    def __init__(self, module: torch.nn.Module, sources: Mapping[str, TensorSource], *,
                 dtype: torch.dtype = torch.float32, seed: int = 0, offload: bool = False
                 ) -> None:
        """``offload``: keep task vectors in (pinned, when CUDA is there) CPU memory and
        stream them to the model's device per tensor, for devices too small to hold them."""
        self.module = module
        self.sources = sources
        self.dtype = dtype
        self.seed = seed
        self.device = next(module.parameters()).device
        self.offload = offload
        self.cache_device = torch.device("cpu") if offload else self.device
        self._state = module.state_dict(keep_vars=True)
        self._applied: dict[str, tuple[Any, ...]] = {}
        self._deltas: dict[tuple[str, str, str, str], torch.Tensor] = {}
        self.last_seconds = 0.0
        self.last_rewritten = 0

    def _tensor(self, ref: tuple[str, str]) -> torch.Tensor:
        return self.sources[ref[0]].get(ref[1]).to(self.device, self.dtype, non_blocking=True)

    def _delta(self, ref: tuple[str, str], base: tuple[str, str]) -> torch.Tensor:
        key = (*ref, *base)
        d = self._deltas.get(key)
        if d is None:
            d = (self._tensor(ref) - self._tensor(base)).to(self.cache_device)
            if self.offload and torch.cuda.is_available():
                d = d.pin_memory()
            self._deltas[key] = d
        return d.to(self.device, non_blocking=True)

    @torch.no_grad()
    def apply(self, recipe: MergeRecipe) -> float:
        """Write the merge described by ``recipe`` into the live model; returns seconds."""
        start = time.perf_counter()
        plan = MergePlan.build(recipe, self.sources, seed=self.seed)
        name = plan.method.name
        rewritten = 0
        for task in plan.tasks:
            target = self._state.get(task.out.name)
            if target is None:
                raise ModelError(f"the live model has no parameter {task.out.name}")
            key = _key(task, name)
            if self._applied.get(task.out.name) == key:
                continue
            rewritten += 1
            if task.copy_only:
                target.copy_(self._tensor(task.inputs[0]))
            elif name == "task_arithmetic" and not task.shared.get("normalize"):
                scale = task.shared.get("lambda", 1.0)
                target.copy_(self._tensor(task.base))  # type: ignore[arg-type]
                for ref, w in zip(task.inputs, task.per_model["weight"], strict=True):
                    target.add_(self._delta(ref, task.base), alpha=w * scale)  # type: ignore[arg-type]
            elif name == "linear" and task.shared.get("normalize", True) and abs(
                    sum(task.per_model["weight"])) > 1e-12:
                total = sum(task.per_model["weight"])
                target.zero_()
                for ref, w in zip(task.inputs, task.per_model["weight"], strict=True):
                    target.add_(self._tensor(ref), alpha=w / total)
            else:
                target.copy_(plan.compute(task, self.device, self.dtype))
            self._applied[task.out.name] = key
        self.last_rewritten = rewritten
        self.last_seconds = time.perf_counter() - start
        return self.last_seconds
