"""The task-vector family: task arithmetic, TIES, DARE, breadcrumbs, DELLA.

All of them work on task vectors d_i = x_i - base: optionally sparsify each (trim by
magnitude, drop at random, drop outliers, MagPrune), weight them, optionally elect a sign per
element (TIES consensus: keep only deltas that agree with the sign of the weighted sum),
optionally normalize by the weights that took part, scale by lambda and add to the base.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import torch

from evomerge.errors import ConfigError
from evomerge.merge import sparsify
from evomerge.merge.registry import Param, merge_method

Weight = Annotated[list[float], Param(per_model=True, help="scale of this model's task vector")]
Density = Annotated[list[float], Param(per_model=True, low=0.0, high=1.0,
                                       help="fraction of the task vector kept")]
Gamma = Annotated[list[float], Param(per_model=True, low=0.0, high=1.0,
                                     help="fraction of largest-magnitude outliers dropped")]
Epsilon = Annotated[list[float], Param(per_model=True, low=0.0, high=1.0,
                                       help="spread of DELLA keep probabilities")]
Lambda = Annotated[float, Param(help="scale of the merged task vector")]

Sparsifier = Callable[[torch.Tensor, int], torch.Tensor]


def combine(base: torch.Tensor, tensors: list[torch.Tensor], weight: list[float],
            sparsifier: Sparsifier | None, consensus: Literal["sum"] | None, normalize: bool,
            lambda_: float) -> torch.Tensor:
    """Shared core of the family; ``sparsifier(delta, i)`` trims model i's task vector (it
    owns ``delta`` and may modify it in place). Inputs are never modified."""
    deltas = []
    for i, x in enumerate(tensors):
        delta = x - base
        if sparsifier is not None:
            delta = sparsifier(delta, i)
        if weight[i] != 1:
            delta.mul_(weight[i])
        deltas.append(delta)
    if consensus == "sum":
        # keep delta_i where its sign agrees with the sign of the weighted sum (0 counts as +)
        mixed = deltas[0].clone()
        for delta in deltas[1:]:
            mixed.add_(delta)
        # elected sign: +1 where the weighted sum is >= 0, else -1 (float masks: fast on CPU)
        elected = torch.ge(mixed, 0, out=mixed).mul_(2).sub_(1)
        out = torch.zeros_like(mixed)
        divisor = torch.zeros_like(mixed) if normalize else None
        keep = torch.empty_like(mixed)
        for w, delta in zip(weight, deltas, strict=True):
            # keep elements whose sign agrees with the elected one (zeros never count)
            torch.mul(delta, elected, out=keep)
            torch.gt(keep, 0, out=keep)
            out.addcmul_(delta, keep)
            if divisor is not None:
                divisor.add_(keep, alpha=w)
        mixed = out
        if divisor is not None:
            divisor.add_(torch.eq(divisor, 0, out=keep))  # no model took part: divide by 1
            mixed.div_(divisor)
    else:
        mixed = deltas[0]
        for delta in deltas[1:]:
            mixed.add_(delta)
        total = sum(weight)
        if normalize and abs(total) >= 1e-8:
            mixed.div_(total)
    if lambda_ != 1:
        mixed.mul_(lambda_)
    return mixed.add_(base)


@merge_method("task_arithmetic", base="required", reference="https://arxiv.org/abs/2212.04089")
def task_arithmetic(tensors: list[torch.Tensor], base: torch.Tensor, *, weight: Weight,
                    normalize: bool = False, lambda_: Lambda = 1.0, rescale: bool = False,
                    int8_mask: bool = False) -> torch.Tensor:
    """base + lambda * sum_i w_i (x_i - base)."""
    return combine(base, tensors, weight, None, None, normalize, lambda_)


@merge_method("ties", base="required", reference="https://arxiv.org/abs/2306.01708")
def ties(tensors: list[torch.Tensor], base: torch.Tensor, *, weight: Weight,
         density: Density = 1.0, normalize: bool = True, lambda_: Lambda = 1.0,
         rescale: bool = False, int8_mask: bool = False) -> torch.Tensor:
    """Trim each task vector to its top-``density`` magnitudes, elect signs, disjoint mean."""
    return combine(base, tensors, weight,
                   lambda d, i: sparsify.magnitude(d, density[i], rescale, inplace=True),
                   "sum", normalize, lambda_)


@merge_method("breadcrumbs", base="required", reference="https://arxiv.org/abs/2312.06795")
def breadcrumbs(tensors: list[torch.Tensor], base: torch.Tensor, *, weight: Weight,
                density: Density = 1.0, gamma: Gamma = 0.01, normalize: bool = False,
                lambda_: Lambda = 1.0, rescale: bool = False, int8_mask: bool = False
                ) -> torch.Tensor:
    """Drop outliers (top ``gamma``) and small values, then task arithmetic."""
    return combine(base, tensors, weight,
                   lambda d, i: sparsify.magnitude_outliers(d, density[i], gamma[i], rescale,
                                                             inplace=True),
                   None, normalize, lambda_)


@merge_method("breadcrumbs_ties", base="required", reference="https://arxiv.org/abs/2312.06795")
def breadcrumbs_ties(tensors: list[torch.Tensor], base: torch.Tensor, *, weight: Weight,
                     density: Density = 1.0, gamma: Gamma = 0.01, normalize: bool = False,
                     lambda_: Lambda = 1.0, rescale: bool = False, int8_mask: bool = False
                     ) -> torch.Tensor:
    """Breadcrumbs sparsification with TIES sign consensus."""
    return combine(base, tensors, weight,
                   lambda d, i: sparsify.magnitude_outliers(d, density[i], gamma[i], rescale,
                                                             inplace=True),
                   "sum", normalize, lambda_)


@merge_method("dare_linear", base="required", reference="https://arxiv.org/abs/2311.03099")
def dare_linear(tensors: list[torch.Tensor], base: torch.Tensor, *, weight: Weight,
                density: Density = 1.0, normalize: bool = False, lambda_: Lambda = 1.0,
                rescale: bool = True, int8_mask: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Drop each delta element with probability 1 - density, rescale by 1/density."""
    return combine(base, tensors, weight,
                   lambda d, i: sparsify.bernoulli(d, density[i], rescale, generator, inplace=True),
                   None, normalize, lambda_)


@merge_method("dare_ties", base="required", reference="https://arxiv.org/abs/2311.03099")
def dare_ties(tensors: list[torch.Tensor], base: torch.Tensor, *, weight: Weight,
              density: Density = 1.0, normalize: bool = False, lambda_: Lambda = 1.0,
              rescale: bool = True, int8_mask: bool = False,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """DARE drop-and-rescale with TIES sign consensus."""
    return combine(base, tensors, weight,
                   lambda d, i: sparsify.bernoulli(d, density[i], rescale, generator, inplace=True),
                   "sum", normalize, lambda_)


def _della(density: list[float], epsilon: list[float], rescale: bool,
           generator: torch.Generator | None) -> Sparsifier:
    for d, e in zip(density, epsilon, strict=False):
        if d < 1 and (d + e >= 1 or d - e <= 0) and d > 0:
            raise ConfigError(f"della: density {d} +/- epsilon {e} must stay inside (0, 1)")
    return lambda t, i: sparsify.della_magprune(t, density[i], epsilon[i], rescale, generator,
                                                      inplace=True)


@merge_method("della", base="required", reference="https://arxiv.org/abs/2406.11617")
def della(tensors: list[torch.Tensor], base: torch.Tensor, *, weight: Weight,
          density: Density = 1.0, epsilon: Epsilon = 0.15, normalize: bool = True,
          lambda_: Lambda = 1.0, rescale: bool = True, int8_mask: bool = False,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """MagPrune (rank-dependent drop probabilities) with TIES sign consensus."""
    return combine(base, tensors, weight, _della(density, epsilon, rescale, generator),
                   "sum", normalize, lambda_)


@merge_method("della_linear", base="required", reference="https://arxiv.org/abs/2406.11617")
def della_linear(tensors: list[torch.Tensor], base: torch.Tensor, *, weight: Weight,
                 density: Density = 1.0, epsilon: Epsilon = 0.15, normalize: bool = False,
                 lambda_: Lambda = 1.0, rescale: bool = True, int8_mask: bool = False,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """MagPrune without sign consensus."""
    return combine(base, tensors, weight, _della(density, epsilon, rescale, generator),
                   None, normalize, lambda_)
