"""WUDI-Merging (Cheng et al., ICML 2025): data-free removal of interference, using each
task's own task vector as a stand-in for its inputs."""

from __future__ import annotations

from typing import Annotated

import torch

from evomerge.merge.methods.spectral import is_matrix
from evomerge.merge.registry import Param, merge_method


def wudi_matrix(deltas: list[torch.Tensor], steps: int, lr: float) -> torch.Tensor:
    """Minimise L(M) = sum_i |(M - d_i) d_i^T|_F^2 / |d_i|_F^2 from M = sum_i d_i with Adam
    (the reference's optimiser and settings), using the exact gradient
    dL/dM = 2 (M A - B), A = sum_i d_i^T d_i / |d_i|^2, B = sum_i d_i d_i^T d_i / |d_i|^2:
    two (in x in) statistics computed once, so a step costs one matrix product."""
    start = torch.stack(deltas).sum(dim=0)
    gram = torch.zeros(start.shape[1], start.shape[1], dtype=start.dtype, device=start.device)
    target = torch.zeros_like(start)
    for d in deltas:
        size = d.square().sum()
        if float(size) == 0:  # a zero task vector adds nothing to the loss
            continue
        g = d.T @ d / size
        gram += g
        target += d @ g
    merged = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([merged], lr=lr)
    for _ in range(steps):
        with torch.no_grad():
            merged.grad = 2 * (merged @ gram - target)
        opt.step()
    return merged.detach()


@merge_method("wudi", base="required", reference="https://arxiv.org/abs/2503.08099")
def wudi(tensors: list[torch.Tensor], base: torch.Tensor, *,
         steps: Annotated[int, Param(low=0, help="Adam steps per matrix")] = 300,
         lr: Annotated[float, Param(low=0.0, help="Adam learning rate")] = 1e-5,
         kind: str | None = None) -> torch.Tensor:
    """Per linear layer, base + M with M minimising sum_i |(M - d_i) d_i^T|^2 / |d_i|^2: M
    must act on each task's input subspace (spanned by the rows of d_i) as d_i does. Starts
    from the task-arithmetic sum; the paper's 300 Adam steps at lr 1e-5 move each element by
    at most about 3e-3, a budget tuned to ViT/LLM weight scales. Vectors, embeddings and the
    head get the mean task vector, as in the reference code."""
    deltas = [x - base for x in tensors]
    if not is_matrix(base, kind):
        return base + torch.stack(deltas).mean(dim=0)
    return base + wudi_matrix(deltas, steps, lr)
