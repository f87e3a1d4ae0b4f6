"""RegMean (Jin et al., ICLR 2023): merge each linear layer as the least-squares fit of all
models' outputs on their own inputs, from the inputs' Gram matrices."""

from __future__ import annotations

from typing import Annotated

import torch

from evomerge.merge.registry import Param, merge_method
from evomerge.merge.statistics import regmean_solve


@merge_method("regmean", base="input", reference="https://arxiv.org/abs/2212.09849")
def regmean(tensors: list[torch.Tensor], base: torch.Tensor | None, *,
            alpha: Annotated[float, Param(low=0.0, high=1.0, help="scale of the Gram matrices' "
                                          "off-diagonal entries")] = 0.9,
            grams: list[torch.Tensor | None] | None = None) -> torch.Tensor:
    """W = (sum_i W_i G_i') (sum_i G_i')^+, G_i' = alpha G_i + (1 - alpha) diag(G_i), G_i the
    Gram matrix of model i's inputs to the layer (``data:``): the W minimising
    sum_i |X_i W^T - X_i W_i^T|^2 when alpha = 1. The pseudo-inverse handles inputs no
    example excites. Tensors without a Gram matrix (biases, norms, embeddings) get the mean
    of the models, as in the paper."""
    if grams is None or any(g is None for g in grams) or tensors[0].dim() != 2:
        return torch.stack(tensors).mean(dim=0)
    return regmean_solve(tensors, grams, alpha)  # type: ignore[arg-type]


@merge_method("regmean_plusplus", base="input",
              reference="https://github.com/nthehai01/RegMean-plusplus")
def regmean_plusplus(tensors: list[torch.Tensor], base: torch.Tensor | None, *,
                     alpha: Annotated[float, Param(low=0.0, high=1.0, help="scale of the Gram "
                                                   "matrices' off-diagonal entries")] = 0.9,
                     gram_pps: list[torch.Tensor | None] | None = None) -> torch.Tensor:
    """RegMean++ (Nguyen et al. 2025): RegMean's formula, with each model's Gram matrices of
    a layer's inputs computed through the already merged earlier layers instead of the
    model's own (``merge.statistics.sequential_grams``), so a layer is merged for the inputs
    it will see in the merged model. The statistics are computed for all models together,
    for the recipe's single ``alpha``."""
    if gram_pps is None or any(g is None for g in gram_pps) or tensors[0].dim() != 2:
        return torch.stack(tensors).mean(dim=0)
    return regmean_solve(tensors, gram_pps, alpha)  # type: ignore[arg-type]
