"""Sparsification of task vectors (the "trim"/"drop" step of TIES, DARE, breadcrumbs, DELLA).

Deterministic methods pick elements by magnitude rank through ``kthvalue`` thresholds
(linear time) instead of mergekit's full ``argsort``; with distinct magnitudes they keep
exactly the same elements. Their optional rescale matches the L1 norm of the input, as
mergekit does. Stochastic methods rescale each kept element by the inverse of its keep
probability, as the DARE and DELLA papers define it (mergekit rescales the whole tensor's L1
norm instead; the two agree in expectation).
"""

from __future__ import annotations

import math

import torch


def _l1_rescaled(tensor_l1: torch.Tensor, masked: torch.Tensor, eps: float = 1e-7
                 ) -> torch.Tensor:
    after = masked.abs().sum()
    if tensor_l1 < eps or after < eps:
        return masked
    return masked.mul_(tensor_l1 / after)


def kth_smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """Exact k-th smallest value (1-based) of a flat tensor, in linear time.

    ``torch.kthvalue`` on the whole tensor costs about 20 ns per element on a CPU. Instead, a
    sorted random sample brackets the answer, one comparison pass counts the elements below
    the bracket, and ``kthvalue`` runs on the few percent inside it. The result is exact: if
    the bracket misses (probability below 1e-4), the full ``kthvalue`` runs.
    """
    n = values.numel()
    if n <= 1 << 17:
        return torch.kthvalue(values, k).values
    s = min(1 << 16, max(1 << 12, n >> 6))
    gen = torch.Generator(device=values.device).manual_seed(n)
    idx = torch.randint(n, (s,), generator=gen, device=values.device)
    sample = values[idx].sort().values
    q = k / n
    margin = 4 * math.sqrt(q * (1 - q) * s) + 16
    lo_i, hi_i = int(q * s - margin), int(q * s + margin)
    if lo_i < 0 and hi_i >= s:
        return torch.kthvalue(values, k).values
    if lo_i < 0:
        below = 0
        inside = values <= sample[hi_i]
    elif hi_i >= s:
        inside = values >= sample[lo_i]
        below = n - int(torch.count_nonzero(inside))
    else:
        lt = values < sample[lo_i]
        below = int(torch.count_nonzero(lt))
        inside = (values <= sample[hi_i]).logical_and_(lt.logical_not_())
    candidates = values[inside]
    if below >= k or below + candidates.numel() < k:
        return torch.kthvalue(values, k).values
    return torch.kthvalue(candidates, k - below).values


def magnitude(tensor: torch.Tensor, density: float, rescale: bool = False,
              inplace: bool = False) -> torch.Tensor:
    """Keep the ``density`` fraction of largest-magnitude elements (at least one)."""
    if density >= 1:
        return tensor
    n = tensor.numel()
    if density <= 0 or n == 0:
        return tensor.zero_() if inplace else torch.zeros_like(tensor)
    k = max(1, int(density * n))
    mags = tensor.abs()
    l1 = mags.sum() if rescale else None
    threshold = kth_smallest(mags.reshape(-1), n - k + 1)
    keep = torch.ge(mags, threshold, out=mags)  # float 0/1 mask: much faster than bool on CPU
    masked = tensor.mul_(keep) if inplace else tensor * keep
    return _l1_rescaled(l1, masked) if l1 is not None else masked


def magnitude_outliers(tensor: torch.Tensor, density: float, gamma: float,
                       rescale: bool = False, inplace: bool = False) -> torch.Tensor:
    """Model Breadcrumbs: drop the ``gamma`` largest and then the smallest elements so that a
    ``density`` fraction remains."""
    if density >= 1:
        return tensor
    n = tensor.numel()
    target = int(density * n)
    n_top = int(gamma * n)
    n_bottom = max(0, n - target - n_top)
    if target == 0:
        return tensor.zero_() if inplace else torch.zeros_like(tensor)
    mags = tensor.abs()
    l1 = mags.sum() if rescale else None
    flat = mags.reshape(-1)
    high = kth_smallest(flat, n_bottom + target)
    low = kth_smallest(flat, n_bottom + 1) if n_bottom > 0 else None
    keep = torch.le(mags, high).to(tensor.dtype)
    if low is not None:
        keep.mul_(torch.ge(mags, low, out=mags))
    masked = tensor.mul_(keep) if inplace else tensor * keep
    return _l1_rescaled(l1, masked) if l1 is not None else masked


def uniform(shape: torch.Size, generator: torch.Generator | None,
            device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) draws made on the generator's device (the CPU) and moved to ``device``:
    CUDA's generator gives other numbers for the same seed, so drawing there would make a
    seeded DARE merge on a GPU differ from the same recipe merged on a CPU."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device,
                      dtype=torch.float32).to(device, non_blocking=True)


def bernoulli(tensor: torch.Tensor, density: float, rescale: bool,
              generator: torch.Generator | None, inplace: bool = False) -> torch.Tensor:
    """DARE: keep each element with probability ``density``, rescaled by 1/density."""
    if density >= 1:
        return tensor
    if density <= 0:
        return tensor.zero_() if inplace else torch.zeros_like(tensor)
    draw = uniform(tensor.shape, generator, tensor.device)
    keep = torch.lt(draw, density, out=draw).to(tensor.dtype)
    if rescale:
        keep.div_(density)
    return tensor.mul_(keep) if inplace else tensor * keep


def della_magprune(tensor: torch.Tensor, density: float, epsilon: float, rescale: bool,
                   generator: torch.Generator | None, inplace: bool = False) -> torch.Tensor:
    """DELLA MagPrune: keep probabilities rise linearly with magnitude rank within each row,
    from density - epsilon to density + epsilon; kept elements are rescaled by 1/p."""
    if density >= 1:
        return tensor
    if density <= 0:
        return tensor.zero_() if inplace else torch.zeros_like(tensor)
    shape = tensor.shape
    rows = tensor.reshape(1, -1) if tensor.dim() < 2 else tensor.reshape(shape[0], -1)
    m = rows.shape[1]
    ranks = torch.argsort(torch.argsort(rows.abs(), dim=1), dim=1).to(torch.float32)
    rank_norm = ranks.div_(m - 1) if m > 1 else ranks.zero_()
    probs = rank_norm.mul_(2 * epsilon).add_(density - epsilon)
    draw = uniform(rows.shape, generator, rows.device)
    keep = torch.lt(draw, probs, out=draw).to(rows.dtype)
    if rescale:
        keep.div_(probs)
    masked = rows.mul_(keep) if inplace else rows * keep
    return masked.reshape(shape)
