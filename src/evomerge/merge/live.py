"""Applying recipes to one live model in place, as fast as the search loop needs.

Inputs stay on the compute device for the whole search. Task vectors (model - base) are
computed once; a task-arithmetic candidate is then one ``torch.add(base, delta, alpha=w,
out=parameter)`` and one in-place multiply-add per further model (linear: a ``mul`` and
adds), written straight into the live parameters: the fewest passes over memory that stock
PyTorch offers (a stacked matrix-vector product was 1.5x slower on CPU, see
docs/benchmarks.md). Tensors whose inputs and
parameters did not change since the previous candidate are skipped, so a genome that moves
one layer group only rewrites that group. Every other method goes through the planner.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from evomerge.errors import ModelError
from evomerge.io.checkpoint import TensorSource
from evomerge.merge.planner import MergePlan, TensorTask
from evomerge.recipe import MergeRecipe

if TYPE_CHECKING:
    from evomerge.merge.statistics import Statistics


def _key(task: TensorTask, method: str) -> tuple[Any, ...]:
    return (method, tuple(task.inputs), task.base, tuple(sorted(task.shared.items())),
            tuple((k, tuple(v)) for k, v in sorted(task.per_model.items())), task.seed)


class LiveMerger:
    def __init__(self, module: torch.nn.Module, sources: Mapping[str, TensorSource], *,
                 dtype: torch.dtype = torch.float32, seed: int = 0, offload: bool = False,
                 renamed: Mapping[str, str] | None = None,
                 statistics_dir: Path | None = None) -> None:
        """``offload``: keep task vectors in (pinned, when CUDA is there) CPU memory and
        stream them to the model's device per tensor, for devices too small to hold them.
        ``renamed``: checkpoint name -> the module's parameter name where transformers
        renames on load (``io.hf.live_names``). ``statistics_dir``: where data-dependent
        methods' statistics are cached (computed on first use, once per model)."""
        self.module = module
        self.sources = sources
        self.dtype = dtype
        self.seed = seed
        self.device = next(module.parameters()).device
        self.offload = offload
        self.cache_device = torch.device("cpu") if offload else self.device
        state = module.state_dict(keep_vars=True)
        self._state = {**state, **{old: state[new] for old, new in (renamed or {}).items()}}
        self._applied: dict[str, tuple[Any, ...]] = {}
        self._deltas: dict[tuple[str, str, str, str], torch.Tensor] = {}
        self.last_seconds = 0.0
        self.last_rewritten = 0
        self.statistics_dir = statistics_dir
        self._statistics: dict[str, Statistics | None] = {}

    def statistics_for(self, recipe: MergeRecipe) -> Statistics | None:
        """The statistics ``recipe`` needs, prepared once per data block and method set."""
        from evomerge.merge.statistics import for_recipe, needed

        wanted = needed(recipe)
        if not wanted:
            return None
        key = repr((sorted((k, sorted(v)) for k, v in wanted.items()),
                    recipe.data, [(m.model, m.data) for m in recipe.models or []]))
        if key not in self._statistics:
            self._statistics[key] = for_recipe(recipe, self.statistics_dir, self.device)
        return self._statistics[key]

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

    def _combine(self, target: torch.Tensor, start: torch.Tensor | None,
                 terms: list[tuple[torch.Tensor, float]]) -> None:
        """target = start + sum of weight * tensor, in float ``self.dtype``, rounded once into
        the target's dtype."""
        out = target if target.dtype == self.dtype else torch.empty_like(target, dtype=self.dtype)
        (first, w0), rest = terms[0], terms[1:]
        if start is None:
            torch.mul(first, w0, out=out)
        else:
            torch.add(start, first, alpha=w0, out=out)
        for t, w in rest:
            out.add_(t, alpha=w)
        if out is not target:
            target.copy_(out)

    @torch.no_grad()
    def apply(self, recipe: MergeRecipe) -> float:
        """Write the merge described by ``recipe`` into the live model; returns seconds."""
        start = time.perf_counter()
        # inputs were checked for NaN/Inf once, when the search loaded them
        plan = MergePlan.build(recipe, self.sources, seed=self.seed, check_inputs=False,
                               statistics=self.statistics_for(recipe))
        rewritten = 0
        for task in plan.tasks:
            name = plan.method_of(task).name
            target = self._state.get(task.out.name)
            if target is None:
                raise ModelError(f"the live model has no parameter {task.out.name}")
            key = _key(task, name)
            if self._applied.get(task.out.name) == key:
                continue
            rewritten += 1
            weights = task.per_model.get("weight")
            if task.copy_only:
                target.copy_(self._tensor(task.inputs[0]))
            elif name == "task_arithmetic" and not task.shared.get("normalize") and weights:
                assert task.base is not None
                scale = task.shared.get("lambda", 1.0)
                terms = [(self._delta(ref, task.base), w * scale)
                         for ref, w in zip(task.inputs, weights, strict=True)]
                self._combine(target, self._tensor(task.base), terms)
            elif name == "linear" and task.shared.get("normalize", True) and weights and abs(
                    sum(weights)) > 1e-12:
                total = sum(weights)
                terms = [(self._tensor(ref), w / total)
                         for ref, w in zip(task.inputs, weights, strict=True)]
                self._combine(target, None, terms)
            else:
                target.copy_(plan.compute(task, self.device, self.dtype))
            self._applied[task.out.name] = key
        self.last_rewritten = rewritten
        self.last_seconds = time.perf_counter() - start
        return self.last_seconds
