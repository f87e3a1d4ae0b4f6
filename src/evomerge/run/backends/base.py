"""The backend contract: ``run(jobs, on_done)`` evaluates (recipe, items, split) jobs and
hands each result back as it completes, in any order; ``slots`` is how many jobs it runs at
once (multi-fidelity search asks that many trials together)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from evomerge.registry import ComponentOptions, Registry

if TYPE_CHECKING:
    from evomerge.config import EvolveConfig

Job = tuple[dict[str, Any], dict[str, list[str] | None], str]  # recipe, items, split
OnDone = Callable[[int, dict[str, Any]], None]  # job index, result


class BackendOptions(ComponentOptions):
    """The ``backend:`` block of an evolve config; ``name`` names the backend."""

    name: str


class Backend(ABC):
    Options: ClassVar[type[BackendOptions]] = BackendOptions

    @abstractmethod
    def __init__(self, config: EvolveConfig) -> None:
        """Reads the models (here or on its workers); a failure is a one-line error."""

    @property
    def slots(self) -> int:
        return 1

    @abstractmethod
    def run(self, jobs: list[Job], on_done: OnDone) -> None: ...

    def activity(self) -> str:
        """A short progress note (e.g. which workers are busy); empty when nothing to say."""
        return ""

    def close(self) -> None:  # noqa: B027  (nothing to release by default)
        """Release workers and devices."""


BACKENDS: Registry[type[Backend]] = Registry("backend", "evomerge.run.backends")


def make_backend(config: EvolveConfig) -> Backend:
    return BACKENDS.get(config.backend.name)(config)
