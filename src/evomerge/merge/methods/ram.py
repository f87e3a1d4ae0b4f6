"""RAM (Reinforced Agent Merging, arXiv 2601.13572): elements only one model changed are kept
whole, elements several models changed are averaged over those models; RAM+ boosts the unique
part of models that share much with others."""

from __future__ import annotations

from typing import Annotated

import torch

from evomerge.merge.registry import Param, merge_method

Epsilon = Annotated[float, Param(low=0.0, help="a delta with |d| <= epsilon counts as unchanged")]


def _contributions(tensors: list[torch.Tensor], base: torch.Tensor, epsilon: float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked task vectors (unchanged elements zeroed), per-element contributor counts, and
    the changed mask."""
    deltas = torch.stack([x - base for x in tensors])
    changed = deltas.abs() > epsilon
    counts = changed.sum(dim=0)
    return deltas * changed, counts, changed


@merge_method("ram", base="required", reference="https://arxiv.org/abs/2601.13572")
def ram(tensors: list[torch.Tensor], base: torch.Tensor, *, epsilon: Epsilon = 1e-5
        ) -> torch.Tensor:
    """c = #{i : |d_i| > eps} per element; result = base + sum_i d_i [|d_i| > eps] / max(c, 1).
    An element one model changed keeps that model's delta; one that k models changed gets
    their mean."""
    deltas, counts, _ = _contributions(tensors, base, epsilon)
    return base + deltas.sum(dim=0) / counts.clamp(min=1)


@merge_method("ramplus_tl", base="required", reference="https://arxiv.org/abs/2601.13572")
def ramplus_tl(tensors: list[torch.Tensor], base: torch.Tensor, *,
               r: Annotated[float, Param(help="strength of the unique-part boost")] = 0.1,
               alpha: Annotated[float, Param(low=0.0, help="cap on the overlap ratio")] = 0.2,
               epsilon: Epsilon = 1e-5) -> torch.Tensor:
    """RAM+ (tensor-local): rho_i = (elements model i changed that others changed too) /
    (elements only model i changed), lambda_i = 1 + r clamp(rho_i, 0, alpha); model i's unique
    elements are scaled by lambda_i, shared ones averaged as in RAM. Statistics are per
    tensor, not over the whole model as in the paper."""
    deltas, counts, changed = _contributions(tensors, base, epsilon)
    unique = counts == 1
    flat = changed.reshape(len(tensors), -1)
    shared_n = (flat & (counts > 1).reshape(1, -1)).sum(dim=1).to(deltas.dtype)
    unique_n = (flat & unique.reshape(1, -1)).sum(dim=1).to(deltas.dtype)
    boost = 1 + r * (shared_n / unique_n.clamp(min=epsilon)).clamp(min=0, max=alpha)
    boost = boost.reshape(-1, *([1] * base.dim()))
    scale = torch.where(unique, boost, 1 / counts.clamp(min=1).to(deltas.dtype))
    return base + (deltas * scale).sum(dim=0)
