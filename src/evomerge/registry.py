"""Registries of components (spaces, optimizers, estimators, extractions, backends, task
sources): each kind maps names to implementations, filled by the ``register`` decorators in
the kind's package. The package's modules are imported on first lookup, so a new component
is one file in that package and nothing else: no list of names to extend anywhere.

A component that takes options declares them as a pydantic model (``Options``) deriving
from ``ComponentOptions``; the job config validates a component's block with the model of
the component it names, so every option is checked and documented where it is used.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from evomerge.errors import ConfigError

T = TypeVar("T")


class ComponentOptions(BaseModel):
    """Base of every component's options: unknown keys and NaN are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str) -> None:
        self.kind, self.package = kind, package
        self._items: dict[str, T] = {}
        self._loaded = False

    def register(self, *names: str) -> Callable[[T], T]:
        """Class or function decorator: the component under each of ``names``."""
        def add(obj: T) -> T:
            for name in names:
                if name in self._items and self._items[name] is not obj:
                    raise RuntimeError(f"two {self.kind}s are registered as {name!r}")
                self._items[name] = obj
            return obj
        return add

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        pkg = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{self.package}.{mod.name}")

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def get(self, name: str) -> T:
        self._load()
        if name not in self._items:
            raise ConfigError(unknown(self.kind, name, self.names()))
        return self._items[name]

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return sorted(self._items.items())


def unknown(kind: str, name: Any, known: list[str]) -> str:
    """``unknown estimator 'gmprt' (did you mean 'gmpirt'? known: ...)``."""
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown {kind} {name!r} ({hint}known: {', '.join(known)})"
