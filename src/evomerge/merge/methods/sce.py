"""SCE (Select, Calculate, Erase; Wan et al. 2024, FuseChat): keep the elements where the
task vectors disagree most, weight each model by its task vector's energy, erase minority
signs."""

from __future__ import annotations

from typing import Annotated

import torch

from evomerge.merge.registry import Param, merge_method


@merge_method("sce", base="required", reference="https://arxiv.org/abs/2408.07990")
def sce(tensors: list[torch.Tensor], base: torch.Tensor, *,
        select_topk: Annotated[float, Param(low=0.0, high=1.0,
                                            help="fraction of elements kept, those with the "
                                                 "largest variance across models")] = 1.0,
        int8_mask: bool = False) -> torch.Tensor:
    """d_i = x_i - base. Select: keep the top ``select_topk`` of the nonzero elements by
    variance of d across models. Calculate: w_i = mean(d_i^2) / sum_j mean(d_j^2) (uniform
    when all are ~0). Erase: m_i = [sign(d_i) == sign(sum_j d_j)] (0 counts as +).
    Result: base + sum_i w_i m_i d_i / max(sum_i w_i m_i, 1e-6)."""
    deltas = torch.stack([x - base for x in tensors])
    if select_topk < 1:
        deltas.mul_(_select(deltas, select_topk))
    elected = torch.where(deltas.sum(dim=0) >= 0, 1.0, -1.0).to(deltas.dtype)
    agree = (deltas.sign() == elected).to(deltas.dtype)
    energy = deltas.square().reshape(len(tensors), -1).mean(dim=1)
    total = float(energy.sum())
    weights = (torch.full_like(energy, 1 / len(tensors)) if abs(total) < 1e-6
               else energy / total)
    weights = weights.reshape(-1, *([1] * base.dim())) * agree
    merged = (deltas * weights).sum(dim=0) / weights.sum(dim=0).clamp(min=1e-6)
    return base + merged


def _select(deltas: torch.Tensor, fraction: float) -> torch.Tensor:
    """1 on the ``fraction`` of nonzero-variance elements with the largest variance."""
    var = torch.var(deltas, dim=0, unbiased=False)
    k = int(torch.count_nonzero(var) * fraction)
    mask = torch.zeros_like(var)
    if k > 0:
        mask.view(-1)[torch.topk(var.reshape(-1), k=k).indices] = 1
    return mask
