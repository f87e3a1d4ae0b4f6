"""Applying recipes to one live model in place, as fast as the search loop needs.

Inputs stay on the compute device for the whole search. For task-arithmetic and linear
candidates, each tensor keeps one matrix whose rows are what a candidate combines (the base
and the task vectors, model - base, computed once; or the models themselves for linear): a
candidate is then a single matrix-vector product written straight into the live parameter,
one pass over memory instead of a copy plus one multiply-add per model
(benchmarks/candidate_overhead.py). Tensors whose inputs and parameters did not change since
the previous candidate are skipped, so a genome that moves one layer group only rewrites that
group. Every other method goes through the planner.
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

Ref = tuple[str, str]
RowKey = tuple[str, ...]  # ("tensor", model, name) | ("delta", model, name, base, base name)


def _key(task: TensorTask, method: str) -> tuple[Any, ...]:
    return (method, tuple(task.inputs), task.base, tuple(sorted(task.shared.items())),
            tuple((k, tuple(v)) for k, v in sorted(task.per_model.items())), task.seed)


class _Rows:
    """The vectors one output tensor is an affine combination of, stacked as rows."""

    def __init__(self) -> None:
        self.index: dict[RowKey, int] = {}
        self.matrix: torch.Tensor | None = None

    def ensure(self, keys: list[RowKey], make: Any) -> None:
        new = [k for k in keys if k not in self.index]
        if not new:
            return
        rows = [make(k).reshape(1, -1) for k in new]
        self.matrix = torch.cat(([self.matrix] if self.matrix is not None else []) + rows)
        for k in new:
            self.index[k] = len(self.index)


class LiveMerger:
    def __init__(self, module: torch.nn.Module, sources: Mapping[str, TensorSource], *,
                 dtype: torch.dtype = torch.float32, seed: int = 0, offload: bool = False
                 ) -> None:
        """``offload``: keep the stacked inputs in (pinned, when CUDA is there) CPU memory
        and stream them to the model's device per tensor, for devices too small to hold
        them."""
        self.module = module
        self.sources = sources
        self.dtype = dtype
        self.seed = seed
        self.device = next(module.parameters()).device
        self.offload = offload
        self.cache_device = torch.device("cpu") if offload else self.device
        self._state = module.state_dict(keep_vars=True)
        self._applied: dict[str, tuple[Any, ...]] = {}
        self._rows: dict[str, _Rows] = {}
        self.last_seconds = 0.0
        self.last_rewritten = 0

    def _tensor(self, ref: Ref) -> torch.Tensor:
        return self.sources[ref[0]].get(ref[1]).to(self.device, self.dtype, non_blocking=True)

    def _row(self, key: RowKey) -> torch.Tensor:
        if key[0] == "delta":
            return self._tensor((key[1], key[2])) - self._tensor((key[3], key[4]))
        return self._tensor((key[1], key[2]))

    def _combine(self, name: str, target: torch.Tensor, terms: list[tuple[RowKey, float]]) -> None:
        """target = sum of coefficient * row, in one matrix-vector product."""
        rows = self._rows.setdefault(name, _Rows())
        rows.ensure([k for k, _ in terms], self._row)
        assert rows.matrix is not None
        if rows.matrix.device != self.cache_device:
            rows.matrix = rows.matrix.to(self.cache_device)
            if self.offload and torch.cuda.is_available():
                rows.matrix = rows.matrix.pin_memory()
        coeffs = [0.0] * len(rows.index)
        for k, c in terms:
            coeffs[rows.index[k]] += c
        weights = torch.tensor(coeffs, dtype=self.dtype).to(self.device, non_blocking=True)
        matrix = rows.matrix.to(self.device, non_blocking=True)
        flat = target.view(-1)
        if target.dtype == self.dtype and target.is_contiguous():
            torch.mv(matrix.t(), weights, out=flat)
        else:
            target.copy_(torch.mv(matrix.t(), weights).view_as(target))

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
            weights = task.per_model.get("weight")
            if task.copy_only:
                target.copy_(self._tensor(task.inputs[0]))
            elif name == "task_arithmetic" and not task.shared.get("normalize"):
                assert task.base is not None and weights is not None
                scale = task.shared.get("lambda", 1.0)
                self._combine(task.out.name, target, [(("tensor", *task.base), 1.0)] + [
                    (("delta", *ref, *task.base), w * scale)
                    for ref, w in zip(task.inputs, weights, strict=True)])
            elif name == "linear" and task.shared.get("normalize", True) and weights and abs(
                    sum(weights)) > 1e-12:
                total = sum(weights)
                self._combine(task.out.name, target, [
                    (("tensor", *ref), w / total)
                    for ref, w in zip(task.inputs, weights, strict=True)])
            else:
                target.copy_(plan.compute(task, self.device, self.dtype))
            self._applied[task.out.name] = key
        self.last_rewritten = rewritten
        self.last_seconds = time.perf_counter() - start
        return self.last_seconds
