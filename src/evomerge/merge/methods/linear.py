"""Linear (weighted average) merging: Wortsman et al., model soups."""

from __future__ import annotations

from typing import Annotated

import torch

from evomerge.errors import ConfigError
from evomerge.merge.registry import Param, merge_method


@merge_method("linear", base="input", reference="https://arxiv.org/abs/2203.05482")
def linear(
    tensors: list[torch.Tensor],
    base: torch.Tensor | None,
    *,
    weight: Annotated[list[float], Param(per_model=True, help="mixing weight")],
    normalize: bool = True,
) -> torch.Tensor:
    """sum_i w_i x_i, divided by sum_i w_i when ``normalize``."""
    out = torch.zeros_like(tensors[0])
    for x, w in zip(tensors, weight, strict=False):
        out.add_(x, alpha=w)
    if normalize:
        total = sum(weight)
        if abs(total) < 1e-12:
            raise ConfigError("linear: weights sum to zero, cannot normalize "
                              "(set normalize: false or change the weights)")
        out.div_(total)
    return out
