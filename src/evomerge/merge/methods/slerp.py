"""Spherical interpolation: SLERP (base + one model) and NuSLERP (two weighted models)."""

from __future__ import annotations

from typing import Annotated

import torch

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
