"""Fisher merging (Matena & Raffel, NeurIPS 2022): a per-parameter weighted average, each
model weighted by its diagonal Fisher information (how much its loss depends on it)."""

from __future__ import annotations

from typing import Annotated

import torch

from evomerge.merge.registry import Param, merge_method


@merge_method("fisher", base="input", reference="https://arxiv.org/abs/2111.09832")
def fisher(tensors: list[torch.Tensor], base: torch.Tensor | None, *,
           weight: Annotated[list[float], Param(per_model=True, low=0.0,
                                                help="model weight lambda_i")] = 1.0,
           fisher_floor: Annotated[float, Param(low=0.0, help="lower bound of each Fisher "
                                                "value")] = 1e-6,
           fishers: list[torch.Tensor | None] | None = None) -> torch.Tensor:
    """theta = sum_i w_i F_i theta_i / sum_i w_i F_i per element, F_i = max(Fisher_i,
    fisher_floor), the diagonal empirical Fisher of model i on the recipe's ``data:``. Where a
    model has no Fisher for a tensor (no gradient reached it), the weighted mean."""
    if fishers is None or any(f is None for f in fishers):
        total = sum(weight)
        return sum(w * x for w, x in zip(weight, tensors, strict=True)) / total  # type: ignore[return-value]
    num = torch.zeros_like(tensors[0])
    den = torch.zeros_like(tensors[0])
    for w, x, f in zip(weight, tensors, fishers, strict=True):
        assert f is not None
        f = w * f.clamp(min=fisher_floor)
        num += f * x
        den += f
    return num / den
