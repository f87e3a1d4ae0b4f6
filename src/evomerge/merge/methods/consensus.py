"""Consensus merging with TALL masks (Wang et al., ICML 2024): keep only the weights that at
least ``k`` tasks need, dropping "selfish" weights (one task) and "catastrophic" ones (none)."""

from __future__ import annotations

from typing import Annotated

import torch

from evomerge.merge import sparsify
from evomerge.merge.methods.task_arithmetic import Density, Lambda, combine
from evomerge.merge.registry import Param, merge_method

Weight = Annotated[list[float], Param(per_model=True, help="scale of this model's task vector")]
Threshold = Annotated[float, Param(low=0.0, help="TALL mask lambda_t: a weight matters to "
                                                 "task t when |d_t| >= it * |sum - d_t|")]
MinTasks = Annotated[int, Param(low=0, help="keep weights that at least this many tasks need")]


def consensus_mask(deltas: list[torch.Tensor], threshold: float, k: int) -> torch.Tensor:
    """1 where at least ``k`` TALL masks m_t = [|d_t| >= threshold |sum_j d_j - d_t|] hold."""
    total = torch.stack(deltas).sum(dim=0)
    votes = torch.zeros_like(total)
    for d in deltas:
        votes += (d.abs() >= threshold * (total - d).abs()).to(total.dtype)
    return (votes >= k).to(total.dtype)


@merge_method("consensus_ta", base="required", min_models=2,
              reference="https://arxiv.org/abs/2405.07813")
def consensus_ta(tensors: list[torch.Tensor], base: torch.Tensor, *, weight: Weight = 1.0,
                 lambda_: Lambda = 1.0, tall_threshold: Threshold = 0.4, k: MinTasks = 2
                 ) -> torch.Tensor:
    """base + lambda * m (sum_i w_i d_i), m the consensus of the TALL masks built from the
    unweighted task vectors d_i = x_i - base (paper's Eq. 7 with tau_MTL = sum_t d_t)."""
    mask = consensus_mask([x - base for x in tensors], tall_threshold, k)
    merged = combine(base, tensors, weight, None, None, False, lambda_) - base
    return base + merged * mask


@merge_method("consensus_ties", base="required", min_models=2,
              reference="https://arxiv.org/abs/2405.07813")
def consensus_ties(tensors: list[torch.Tensor], base: torch.Tensor, *, weight: Weight = 1.0,
                   density: Density = 1.0, normalize: bool = True, lambda_: Lambda = 1.0,
                   tall_threshold: Threshold = 0.4, k: MinTasks = 2) -> torch.Tensor:
    """TIES merge of the task vectors, then the consensus mask of their TALL masks."""
    mask = consensus_mask([x - base for x in tensors], tall_threshold, k)
    merged = combine(base, tensors, weight,
                     lambda d, i: sparsify.magnitude(d, density[i], False, inplace=True),
                     "sum", normalize, lambda_) - base
    return base + merged * mask
