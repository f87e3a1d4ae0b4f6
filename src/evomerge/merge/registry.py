"""Merge methods as typed functions, registered by name; parameters come from the signature.

A method is ``fn(tensors, base, *, <params>) -> Tensor``: ``tensors`` are the non-base inputs
(or all inputs for methods that give the base no special role), ``base`` the base model's
tensor or None. Keyword-only parameters become recipe parameters: a parameter annotated
``Annotated[list[float], Param(per_model=True)]`` takes one value per input model, any other is
shared by all models. Defaults come from the signature; a parameter without default is
required. A method that takes ``generator`` is stochastic and receives a seeded
``torch.Generator``; one that takes ``kind`` receives the tensor's module kind ("embedding",
"head", "attention", "mlp", "norm", ...: ``io.naming.module_kind``), for methods that treat
embeddings differently from linear maps; one that takes ``grams``, ``gram_pps`` or
``fishers`` is
data-dependent and receives, per input, that statistic of the tensor (``merge.statistics``:
RegMean's input Gram matrices, the diagonal Fisher) or None. Adding a method is one
decorated function in ``merge/methods/``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from evomerge.errors import ConfigError

BasePolicy = Literal["required", "optional", "input"]
REQUIRED = inspect.Parameter.empty


@dataclass(frozen=True)
class Param:
    """Metadata for a merge-method parameter, used inside ``typing.Annotated``."""

    per_model: bool = False
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    help: str = ""


@dataclass(frozen=True)
class ParamSpec:
    name: str  # as written in recipes (``lambda``, not ``lambda_``)
    arg: str  # as the Python keyword argument
    type: type
    default: Any
    meta: Param

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def validate(self, value: Any) -> Any:
        """Coerce a recipe value to this parameter's type and check its range."""
        if value is None and self.type is float and not self.required and self.default is None:
            return None
        try:
            if self.type is bool:
                if isinstance(value, str) and value.lower() in ("true", "false"):
                    value = value.lower() == "true"
                if not isinstance(value, bool):
                    raise ValueError
            elif self.type in (float, int):
                if isinstance(value, bool):
                    raise ValueError
                value = self.type(value)
                if self.type is float and value != value:
                    raise ValueError
            elif self.type is str:
                value = str(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"parameter {self.name}={value!r} must be a {self.type.__name__}"
            ) from None
        m = self.meta
        if self.type in (float, int):
            too_low = m.low is not None and (
                value < m.low or (value == m.low and not m.low_inclusive))
            too_high = m.high is not None and (
                value > m.high or (value == m.high and not m.high_inclusive))
            if too_low or too_high:
                low = "-inf" if m.low is None else m.low
                high = "inf" if m.high is None else m.high
                rng = (f"{'[' if m.low_inclusive else '('}{low}, "
                       f"{high}{']' if m.high_inclusive else ')'}")
                raise ConfigError(f"parameter {self.name}={value} is out of range {rng}")
        return value


@dataclass(frozen=True)
class MergeMethod:
    name: str
    fn: Callable[..., torch.Tensor]
    base: BasePolicy
    min_models: int
    max_models: int | None
    stochastic: bool
    wants_kind: bool
    statistics: str | None  # "gram" or "fisher": the per-input statistic the method needs
    shared: tuple[ParamSpec, ...]
    per_model: tuple[ParamSpec, ...]
    doc: str = ""
    reference: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def params(self) -> tuple[ParamSpec, ...]:
        return self.shared + self.per_model

    @property
    def sparse(self) -> bool:
        """Whether the method drops part of each task vector (a per-model ``density``)."""
        return any(p.name == "density" for p in self.per_model)

    def __call__(self, tensors: list[torch.Tensor], base: torch.Tensor | None,
                 generator: torch.Generator | None = None, kind: str | None = None,
                 stats: list[torch.Tensor | None] | None = None, **kwargs: Any
                 ) -> torch.Tensor:
        if self.stochastic:
            kwargs["generator"] = generator
        if self.wants_kind:
            kwargs["kind"] = kind
        if self.statistics is not None:
            kwargs[f"{self.statistics}s"] = stats
        return self.fn(tensors, base, **kwargs)


_REGISTRY: dict[str, MergeMethod] = {}


def merge_method(name: str, *, base: BasePolicy, min_models: int = 1,
                 max_models: int | None = None, reference: str = ""
                 ) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Register ``fn`` as merge method ``name``; see the module docstring for the contract."""

    def register(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if name in _REGISTRY:
            raise ValueError(f"merge method {name!r} is already registered")
        hints = typing.get_type_hints(fn, include_extras=True)
        shared: list[ParamSpec] = []
        per_model: list[ParamSpec] = []
        stochastic = wants_kind = False
        statistics = None
        for p in inspect.signature(fn).parameters.values():
            if p.kind is not inspect.Parameter.KEYWORD_ONLY:
                continue
            if p.name == "generator":
                stochastic = True
                continue
            if p.name == "kind":
                wants_kind = True
                continue
            if p.name in ("grams", "fishers", "gram_pps"):
                statistics = p.name[:-1]
                continue
            hint = hints[p.name]
            meta = Param()
            if typing.get_origin(hint) is typing.Annotated:
                hint, *extras = typing.get_args(hint)
                meta = next((e for e in extras if isinstance(e, Param)), meta)
            scalar = _scalar_type(hint, per_model=meta.per_model)
            spec = ParamSpec(name=p.name.rstrip("_"), arg=p.name, type=scalar, default=p.default,
                             meta=meta)
            (per_model if meta.per_model else shared).append(spec)
        _REGISTRY[name] = MergeMethod(
            name=name, fn=fn, base=base, min_models=min_models, max_models=max_models,
            stochastic=stochastic, wants_kind=wants_kind, statistics=statistics,
            shared=tuple(shared),
            per_model=tuple(per_model),
            doc=inspect.getdoc(fn) or "", reference=reference,
        )
        return fn

    return register


def _scalar_type(hint: Any, per_model: bool) -> type:
    if per_model:
        args = typing.get_args(hint)
        hint = args[0] if args else float
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args:  # Optional[float] and friends
        hint = args[0]
    if hint not in (bool, int, float, str):
        raise TypeError(f"unsupported parameter type {hint!r}")
    return hint


def get_method(name: str) -> MergeMethod:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        from evomerge.registry import unknown

        raise ConfigError(unknown("merge method", name, sorted(_REGISTRY))) from None


def methods() -> dict[str, MergeMethod]:
    _load_builtin()
    return dict(_REGISTRY)


def _load_builtin() -> None:
    import evomerge.merge.methods  # noqa: F401  (registers on import)
