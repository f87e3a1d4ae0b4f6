"""Passthrough: copy one input unchanged (optionally scaled); with slices, layer stacking."""

from __future__ import annotations

from typing import Annotated

import torch

from evomerge.merge.registry import Param, merge_method


@merge_method("passthrough", base="input", max_models=1)
def passthrough(
    tensors: list[torch.Tensor],
    base: torch.Tensor | None,
    *,
    scale: Annotated[list[float | None], Param(per_model=True)] = None,
) -> torch.Tensor:
    """The single input, times ``scale`` when given."""
    value = scale[0] if scale else None
    return tensors[0] if value is None else tensors[0] * value
