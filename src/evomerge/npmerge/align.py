"""Neuron alignment by weight matching (Git Re-Basin), for models trained from different
initialisations.

Hidden units can be permuted without changing a network's function, so two independently
trained models usually disagree on which unit does what; averaging them then mixes unrelated
units. Weight matching finds, for each permutable hidden layer, the permutation of model B's
units that best matches model A's weights (a linear assignment problem per layer, solved in
turn until no layer improves), and applying it leaves B's outputs unchanged.

A ``PermutationSpec`` says, declaratively, which axis of which parameter or buffer each
permutation acts on; ``sequential_spec`` derives it for MLPs and CNNs built as a sequence of
layers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from evomerge.errors import ModelError

Params = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class PermutationSpec:
    """``axes[name]``: for each axis of the tensor ``name``, the permutation acting on it
    (None: not permuted). Tensors not listed are never permuted."""

    axes: dict[str, tuple[str | None, ...]]

    @property
    def perm_to_axes(self) -> dict[str, list[tuple[str, int]]]:
        out: dict[str, list[tuple[str, int]]] = {}
        for name, perms in self.axes.items():
            for axis, p in enumerate(perms):
                if p is not None:
                    out.setdefault(p, []).append((name, axis))
        return out


def sequential_spec(module: torch.nn.Module) -> PermutationSpec:
    """The spec of a network whose layers run in registration order: Linear and Conv layers
    (each one's output units are a permutation, except the last layer's), BatchNorm and
    LayerNorm following them, and parameter-free layers (activations, pooling, dropout,
    Flatten after a global pooling to one value per channel) in between."""
    axes: dict[str, tuple[str | None, ...]] = {}
    layers = [(n, m) for n, m in module.named_modules()
              if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d,
                                torch.nn.BatchNorm1d, torch.nn.BatchNorm2d,
                                torch.nn.LayerNorm))]
    weighted = [n for n, m in layers if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d,
                                                       torch.nn.Conv2d))]
    if not weighted:
        raise ModelError("no Linear or Conv layer to align")
    current: str | None = None  # the permutation of the features flowing in
    width = 0  # how many features it permutes
    for name, m in layers:
        prefix = f"{name}." if name else ""
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)):
            fan_in = m.weight.shape[1]
            if current is not None and fan_in != width:
                raise ModelError(f"layer {name} takes {fan_in} features where the previous "
                                 f"layer gives {width} channels (flatten without global "
                                 "pooling): write a PermutationSpec by hand")
            out_perm = None if name == weighted[-1] else f"P_{name}"
            width = m.weight.shape[0]
            rest = (None,) * (m.weight.dim() - 2)
            axes[prefix + "weight"] = (out_perm, current, *rest)
            if m.bias is not None:
                axes[prefix + "bias"] = (out_perm,)
            current = out_perm
        else:
            if current is None:
                continue
            for t in ("weight", "bias", "running_mean", "running_var"):
                if getattr(m, t, None) is not None:
                    axes[prefix + t] = (current,)
    return PermutationSpec(axes)


def permute(spec: PermutationSpec, perms: Mapping[str, torch.Tensor], params: Params,
            name: str, except_axis: int | None = None) -> torch.Tensor:
    """``params[name]`` with every permutation of ``perms`` applied (but the one on
    ``except_axis``)."""
    w = params[name]
    for axis, p in enumerate(spec.axes.get(name, ())):
        if p is not None and axis != except_axis:
            w = torch.index_select(w, axis, perms[p].to(w.device))
    return w


def apply_permutation(spec: PermutationSpec, perms: Mapping[str, torch.Tensor], params: Params
                      ) -> dict[str, torch.Tensor]:
    """A state dict with the units of every permuted layer reordered."""
    return {k: permute(spec, perms, params, k) if k in spec.axes else v
            for k, v in params.items()}


def weight_matching(spec: PermutationSpec, params_a: Params, params_b: Params, *,
                    max_iter: int = 100, seed: int = 0) -> dict[str, torch.Tensor]:
    """Permutations of B's hidden units that maximise sum <W_A, P W_B> over all layers;
    coordinate ascent over layers in random order (seeded) until no layer improves."""
    p2a = spec.perm_to_axes
    missing = [k for k in spec.axes if k not in params_a or k not in params_b]
    if missing:
        raise ModelError(f"tensor {missing[0]!r} of the permutation spec is missing")
    sizes = {p: params_a[axes[0][0]].shape[axes[0][1]] for p, axes in p2a.items()}
    perms = {p: torch.arange(n) for p, n in sizes.items()}
    rng = np.random.default_rng(seed)
    names = sorted(p2a)
    for _ in range(max_iter):
        improved = False
        for p in rng.permutation(names):
            n = sizes[p]
            gain = torch.zeros(n, n, dtype=torch.float64)
            for name, axis in p2a[p]:
                wa = torch.movedim(params_a[name].detach(), axis, 0).reshape(n, -1)
                wb = torch.movedim(permute(spec, perms, params_b, name, except_axis=axis)
                                   .detach(), axis, 0).reshape(n, -1)
                gain += (wa.double() @ wb.double().T).cpu()
            _, cols = linear_sum_assignment(gain.numpy(), maximize=True)
            old = gain[torch.arange(n), perms[p]].sum().item()
            new = gain[torch.arange(n), torch.as_tensor(cols)].sum().item()
            if new > old + 1e-12 * max(1.0, abs(old)):
                improved = True
            perms[p] = torch.as_tensor(cols, dtype=torch.long)
        if not improved:
            break
    return perms


def align(spec: PermutationSpec, params_a: Params, params_b: Params, *, max_iter: int = 100,
          seed: int = 0) -> dict[str, torch.Tensor]:
    """B's state dict permuted to match A's units (same function as B)."""
    return apply_permutation(spec, weight_matching(spec, params_a, params_b,
                                                   max_iter=max_iter, seed=seed), params_b)
