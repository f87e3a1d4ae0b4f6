"""Spherical interpolation: SLERP, NuSLERP, Multi-SLERP and the Karcher mean."""

from __future__ import annotations

from typing import Annotated

import torch

from evomerge.errors import ConfigError
from evomerge.merge.registry import Param, merge_method


def slerp_tensors(t: float, v0: torch.Tensor, v1: torch.Tensor, dot_threshold: float = 0.9995,
                  eps: float = 1e-8) -> torch.Tensor:
    """Interpolate along the great circle between the directions of v0 and v1 (whole tensors),
    applying the coefficients to the raw tensors; nearly collinear pairs fall back to lerp."""
    a = v0.reshape(-1)
    b = v1.reshape(-1)
    na = torch.linalg.vector_norm(a)
    nb = torch.linalg.vector_norm(b)
    na = na if na > eps else torch.ones_like(na)
    nb = nb if nb > eps else torch.ones_like(nb)
    dot = torch.dot(a / na, b / nb).clamp(-1, 1)
    if dot.abs() > dot_threshold:
        return torch.lerp(v0, v1, t)
    theta = torch.acos(dot)
    s = torch.sin(theta)
    return (torch.sin((1 - t) * theta) / s) * v0 + (torch.sin(t * theta) / s) * v1


@merge_method("slerp", base="required", min_models=1, max_models=1,
              reference="https://en.wikipedia.org/wiki/Slerp")
def slerp(tensors: list[torch.Tensor], base: torch.Tensor, *,
          t: Annotated[float, Param(low=0.0, high=1.0, help="0 = base, 1 = the other model")]
          ) -> torch.Tensor:
    """SLERP from the base (t = 0) to the other model (t = 1)."""
    return slerp_tensors(t, base, tensors[0])


def nuslerp_tensors(t: float, v0: torch.Tensor, v1: torch.Tensor, row_wise: bool, flatten: bool,
                    eps: float = 1e-8) -> torch.Tensor:
    shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif row_wise:
        v0, v1 = v0.transpose(0, -1), v1.transpose(0, -1)
    u0 = v0 / torch.norm(v0, dim=-1, keepdim=True).clamp(min=1e-7)
    u1 = v1 / torch.norm(v1, dim=-1, keepdim=True).clamp(min=1e-7)
    cos = torch.sum(u0 * u1, dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= eps**2
    theta = torch.acos(torch.where(colinear, 0, cos))
    s = torch.sin(theta)
    out = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / s
    out = torch.where(colinear, (1 - t) * v0 + t * v1, out)
    if row_wise and not flatten:
        out = out.transpose(0, -1)
    return out.reshape(shape)


@merge_method("nuslerp", base="optional", min_models=2, max_models=2)
def nuslerp(tensors: list[torch.Tensor], base: torch.Tensor | None, *,
            weight: Annotated[list[float], Param(per_model=True)],
            nuslerp_row_wise: bool = False, nuslerp_flatten: bool = True) -> torch.Tensor:
    """SLERP between two models at t = w_1 / (w_0 + w_1); with a base, between task vectors."""
    total = sum(weight)
    t = 0.5 if abs(total) < 1e-6 else weight[1] / total
    if base is not None:
        return base + nuslerp_tensors(t, tensors[0] - base, tensors[1] - base,
                                      nuslerp_row_wise, nuslerp_flatten)
    return nuslerp_tensors(t, tensors[0], tensors[1], nuslerp_row_wise, nuslerp_flatten)


@merge_method("multislerp", base="optional", min_models=1,
              reference="https://goddard.blog/posts/multislerp-wow-what-a-cool-idea")
def multislerp(tensors: list[torch.Tensor], base: torch.Tensor | None, *,
               weight: Annotated[list[float], Param(per_model=True, help="barycentric weight")],
               normalize_weights: bool = True,
               eps: Annotated[float, Param(low=0.0, help="numerical floor")] = 1e-8
               ) -> torch.Tensor:
    """Barycentric SLERP of any number of models (of task vectors when there is a base):
    u_i = v_i / (|v_i| + eps), result = normalize(sum_i w_i u_i) * sum_i w_i |v_i| (+ base);
    weights are divided by their sum when ``normalize_weights``. mergekit also takes an
    exponential-map step along sum_i w_i (u_i - (u_i.m) m), which is zero whenever m is the
    normalised weighted mean, so evomerge leaves it out (equal within float rounding). Where
    every input equals the base (a tensor no fine-tune changed) the result is the base;
    mergekit raises there."""
    if len(tensors) == 1:
        return tensors[0]
    shape = tensors[0].shape
    flat = torch.stack([(x if base is None else x - base).reshape(-1) for x in tensors])
    w = torch.tensor(weight, dtype=flat.dtype, device=flat.device)
    if normalize_weights:
        w = w / w.sum()
    norms = torch.norm(flat, dim=-1)
    direction = ((flat / (norms.unsqueeze(-1) + eps)) * w.view(-1, 1)).sum(0)
    size = torch.norm(direction)
    if bool((norms <= eps).all()):  # nothing moved (a frozen tensor): mergekit raises here
        out = torch.zeros_like(flat[0])
    elif size < eps:
        if len(tensors) != 2:
            raise ConfigError("multislerp: the weighted directions cancel out (antipodal "
                              "models with balancing weights); change the weights")
        out = flat[0] * w[0] + flat[1] * w[1]  # mergekit's fallback: plain interpolation
    else:
        out = direction / size * (norms * w).sum()
    out = out.view(shape)
    return out if base is None else out + base


def karcher_mean(tensors: list[torch.Tensor], alphas: list[float], max_iter: int, tol: float
                 ) -> torch.Tensor:
    """Weighted Riemannian (Karcher) mean of the tensors' directions on the unit sphere, by
    fixed-point iteration of the exponential map, scaled by the weighted mean norm."""
    dtype = torch.float64 if tensors[0].dtype == torch.float64 else torch.float32
    norms = [torch.linalg.vector_norm(x.to(dtype)) for x in tensors]
    units = [torch.zeros_like(x) if float(n) == 0 else (x / n).to(x.dtype)
             for x, n in zip(tensors, norms, strict=True)]
    valid = [i for i, n in enumerate(norms) if float(n) > tol]
    if not valid:
        return torch.zeros_like(tensors[0])
    total = sum(alphas[i] for i in valid)
    weights = [alphas[i] / total for i in valid]
    points = [units[i] for i in valid]
    mean = torch.zeros_like(points[0])
    for a, u in zip(weights, points, strict=True):
        mean += a * u
    size = torch.linalg.vector_norm(mean.to(dtype))
    mean = points[0].clone() if float(size) < tol else (mean / size).to(mean.dtype)
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for a, u in zip(weights, points, strict=True):
            dot = torch.clamp(torch.dot(mean.flatten(), u.flatten()), -1.0, 1.0)
            theta = torch.arccos(dot)
            if float(theta) < tol:
                continue
            tangent += a * (theta / torch.sin(theta)) * (u - dot * mean)
        step = torch.linalg.vector_norm(tangent.to(dtype))
        if float(step) < tol:
            break
        mean = (torch.cos(step) * mean + torch.sin(step) * (tangent / step)).to(mean.dtype)
        size = torch.linalg.vector_norm(mean.to(dtype))
        if float(size) > tol:
            mean = (mean / size).to(mean.dtype)
    return sum(a * n for a, n in zip(alphas, norms, strict=True)) * mean


@merge_method("karcher", base="input", min_models=1, reference="https://arxiv.org/abs/2603.04972")
def karcher(tensors: list[torch.Tensor], base: torch.Tensor | None, *,
            max_iter: Annotated[int, Param(low=1, help="fixed-point iterations")] = 10,
            tol: Annotated[float, Param(low=0.0, help="convergence tolerance")] = 1e-5
            ) -> torch.Tensor:
    """Equal-weight Karcher mean: the point on the unit sphere minimising the summed squared
    geodesic distances to the inputs' directions, times their mean norm. Models with norm
    <= tol keep their weight in the norm but not in the direction."""
    if len(tensors) == 1:
        return tensors[0]
    return karcher_mean(tensors, [1.0 / len(tensors)] * len(tensors), max_iter, tol)
