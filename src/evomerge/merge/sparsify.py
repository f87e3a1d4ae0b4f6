"""Sparsification of task vectors (the "trim"/"drop" step of TIES, DARE, breadcrumbs, DELLA).

Deterministic methods pick elements by magnitude rank through ``kthvalue`` thresholds
(linear time) instead of mergekit's full ``argsort``; with distinct magnitudes they keep
exactly the same elements. Their optional rescale matches the L1 norm of the input, as
mergekit does. Stochastic methods rescale each kept element by the inverse of its keep
probability, as the DARE and DELLA papers define it (mergekit rescales the whole tensor's L1
norm instead; the two agree in expectation).
"""

from __future__ import annotations

import torch


def _l1_rescaled(tensor: torch.Tensor, masked: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    before = tensor.abs().sum()
    after = masked.abs().sum()
    if before < eps or after < eps:
        return masked
    return masked * (before / after)


def _kth_smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """k-th smallest value (1-based) of a flat tensor."""
    return torch.kthvalue(values, k).values


def magnitude(tensor: torch.Tensor, density: float, rescale: bool = False) -> torch.Tensor:
    """Keep the ``density`` fraction of largest-magnitude elements (at least one)."""
    if density >= 1:
        return tensor
    n = tensor.numel()
    if density <= 0 or n == 0:
        return torch.zeros_like(tensor)
    k = max(1, int(density * n))
    mags = tensor.abs().reshape(-1)
    threshold = _kth_smallest(mags, n - k + 1)
    masked = tensor * (tensor.abs() >= threshold)
    return _l1_rescaled(tensor, masked) if rescale else masked


def magnitude_outliers(tensor: torch.Tensor, density: float, gamma: float,
                       rescale: bool = False) -> torch.Tensor:
    """Model Breadcrumbs: drop the ``gamma`` largest and then the smallest elements so that a
    ``density`` fraction remains."""
    if density >= 1:
        return tensor
    n = tensor.numel()
    target = int(density * n)
    n_top = int(gamma * n)
    n_bottom = max(0, n - target - n_top)
    if target == 0:
        return torch.zeros_like(tensor)
    mags = tensor.abs()
    flat = mags.reshape(-1)
    keep = mags <= _kth_smallest(flat, n_bottom + target)
    if n_bottom > 0:
        keep &= mags >= _kth_smallest(flat, n_bottom + 1)
    masked = tensor * keep
    return _l1_rescaled(tensor, masked) if rescale else masked


def bernoulli(tensor: torch.Tensor, density: float, rescale: bool,
              generator: torch.Generator | None) -> torch.Tensor:
    """DARE: keep each element with probability ``density``, rescaled by 1/density."""
    if density >= 1:
        return tensor
    if density <= 0:
        return torch.zeros_like(tensor)
    keep = torch.rand(tensor.shape, generator=generator, device=tensor.device,
                      dtype=torch.float32) < density
    masked = tensor * keep
    return masked / density if rescale else masked


def della_magprune(tensor: torch.Tensor, density: float, epsilon: float, rescale: bool,
                   generator: torch.Generator | None) -> torch.Tensor:
    """DELLA MagPrune: keep probabilities rise linearly with magnitude rank within each row,
    from density - epsilon to density + epsilon; kept elements are rescaled by 1/p."""
    if density >= 1:
        return tensor
    if density <= 0:
        return torch.zeros_like(tensor)
    shape = tensor.shape
    rows = tensor.reshape(1, -1) if tensor.dim() < 2 else tensor.reshape(shape[0], -1)
    m = rows.shape[1]
    ranks = torch.argsort(torch.argsort(rows.abs(), dim=1), dim=1).to(torch.float32)
    rank_norm = ranks / (m - 1) if m > 1 else torch.zeros_like(ranks)
    probs = (density - epsilon) + rank_norm * (2 * epsilon)
    keep = torch.rand(rows.shape, generator=generator, device=rows.device) < probs
    masked = rows * keep
    if rescale:
        masked = masked / probs.to(rows.dtype)
    return masked.reshape(shape)
