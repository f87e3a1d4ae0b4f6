"""NearSwap: keep the base where the other model differs much, take the other model where
they nearly agree (mergekit's ``nearswap``)."""

from __future__ import annotations

from typing import Annotated

import torch

from evomerge.merge.registry import Param, merge_method


@merge_method("nearswap", base="required", min_models=1, max_models=1,
              reference="https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001")
def nearswap(tensors: list[torch.Tensor], base: torch.Tensor, *,
             t: Annotated[float, Param(low=0.0, help="distance scale: elements closer than "
                                                    "t take the other model's value")]
             ) -> torch.Tensor:
    """w = clamp(t / max(|base - other|, 1e-6), 0, 1) per element; w * other + (1 - w) * base.
    Elements within ``t`` of each other become the other model's; far apart ones stay near
    the base's (weight t / distance)."""
    other = tensors[0]
    weight = (t / (base - other).abs().clamp(min=1e-6)).clamp(min=0, max=1)
    return weight * other + (1 - weight) * base
