"""Resolve a parameter setting for one tensor: filters, layer gradients, precedence.

Semantics follow mergekit exactly, so existing recipes mean the same thing:
- a scalar applies everywhere;
- a list of numbers is a gradient: anchors spread evenly over ``t`` in [0, 1] (the layer's
  position in its slice, 0 for tensors outside the layers) and linearly interpolated;
  a list of non-numbers picks ``values[int(t * (n - 1))]``;
- ``{filter, value}`` entries apply when ``filter`` is a substring of the tensor name (or is
  missing or ``*``); the first match wins;
- scopes are searched from most to least specific (model in slice, slice, recipe); a scope
  whose filters match nothing falls through to the next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from evomerge.recipe import ConditionalParameter, ParameterSetting

Validate = Callable[[Any], Any]


def evaluate_setting(tensor_name: str, setting: ParameterSetting, t: float,
                     validate: Validate) -> Any:
    """The value of one setting for one tensor, or None when no filter matches."""
    if isinstance(setting, ConditionalParameter):
        setting = [setting]
    if isinstance(setting, (bool, int, float, str)):
        return validate(setting)
    if isinstance(setting, list):
        if not setting:
            return None
        if all(isinstance(e, (bool, int, float, str)) for e in setting):
            values = [validate(e) for e in setting]
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            if not numeric:
                return values[int(t * (len(values) - 1))]
            scaled = t * (len(values) - 1)
            i0 = int(scaled)
            i1 = min(len(values) - 1, i0 + 1)
            frac = scaled - i0
            return validate((1 - frac) * values[i0] + frac * values[i1])
        for cond in setting:
            if not isinstance(cond, ConditionalParameter):
                cond = ConditionalParameter.model_validate(cond)
            if cond.filter in (None, "*") or (tensor_name and cond.filter in tensor_name):
                return evaluate_setting(tensor_name, cond.value, t, validate)
        return None
    raise TypeError(f"unexpected parameter setting {setting!r}")


def resolve(name: str, scopes: Iterable[Mapping[str, ParameterSetting] | None], tensor_name: str,
            t: float, validate: Validate) -> Any:
    """First non-None value of parameter ``name`` over scopes (most specific first)."""
    for scope in scopes:
        if scope and name in scope:
            value = evaluate_setting(tensor_name, scope[name], t, validate)
            if value is not None:
                return value
    return None
