"""RegMean (Jin et al., ICLR 2023): merge each linear layer as the least-squares fit of all
models' outputs on their own inputs, from the inputs' Gram matrices."""

from __future__ import annotations

from typing import Annotated

import torch

from evomerge.merge.registry import Param, merge_method


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
    total = torch.zeros_like(grams[0])  # type: ignore[arg-type]
    target = torch.zeros_like(tensors[0])
    for w, g in zip(tensors, grams, strict=True):
        assert g is not None
        g = alpha * g + (1 - alpha) * torch.diag(torch.diagonal(g))
        total += g
        target += w @ g
    return (target.double() @ torch.linalg.pinv(total.double(), hermitian=True)).to(
        tensors[0].dtype)
