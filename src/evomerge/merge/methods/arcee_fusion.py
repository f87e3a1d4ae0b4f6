"""Arcee Fusion: take the other model's value only where it moved far and changed the
tensor's softmax profile; elsewhere keep the base."""

from __future__ import annotations

import torch

from evomerge.merge.registry import merge_method


def _quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """The element at sorted index floor(q (n - 1)), as mergekit's quantile picks it."""
    flat = values.reshape(-1)
    return flat.kthvalue(int(q * (flat.numel() - 1)) + 1).values


@merge_method("arcee_fusion", base="required", min_models=1, max_models=1,
              reference="https://arcee.ai")
def arcee_fusion(tensors: list[torch.Tensor], base: torch.Tensor) -> torch.Tensor:
    """importance = |x - base| * KL(softmax(x) || softmax(base)) along the last axis (1e-8
    added to both distributions); threshold = median + 1.5 IQR of importance; result =
    base + (x - base) [importance >= threshold]. mergekit estimates the quartiles from a
    sample of 1M elements on larger tensors; evomerge computes them exactly."""
    other = tensors[0]
    p = torch.softmax(other, dim=-1) + 1e-8
    q = torch.softmax(base, dim=-1) + 1e-8
    kl = (p * torch.log(p / q)).sum(dim=-1, keepdim=True)
    importance = (other - base).abs() * kl
    q1, median, q3 = (_quantile(importance, f) for f in (0.25, 0.5, 0.75))
    keep = importance >= median + 1.5 * (q3 - q1)
    return base + (other - base) * keep
