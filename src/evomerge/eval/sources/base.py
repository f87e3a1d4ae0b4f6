"""The task-source contract: a search task's (search, test) pair for evolve, and the items
of a data block for np-merge, with the selection options every source shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

from evomerge.errors import ConfigError
from evomerge.eval.tasks import Task
from evomerge.registry import Registry

if TYPE_CHECKING:
    from evomerge.config import DataConfig, TaskConfig


class TaskSource(ABC):
    task_key: ClassVar[str]  # the TaskConfig field that selects this source
    data_key: ClassVar[str]  # the DataConfig (np-merge) field that selects it

    @abstractmethod
    def pair(self, t: TaskConfig) -> tuple[Task, Task]:
        """(search split, held-out test split) of an evolve task."""

    @abstractmethod
    def data(self, d: DataConfig, role: str) -> Task:
        """The items of an np-merge data block (before ``ids`` and ``limit``)."""


TASK_SOURCES: Registry[type[TaskSource]] = Registry("task source", "evomerge.eval.sources")


def _source(config: object, field: str) -> TaskSource:
    keys = [cls for _, cls in TASK_SOURCES.items() if getattr(config, getattr(cls, field))]
    if len(keys) != 1:  # the config's own validator reports this first
        raise ConfigError("give exactly one task source")
    return keys[0]()


def source_keys(field: str = "task_key") -> list[str]:
    """The config fields that select a source (for the configs' one-source check)."""
    return [getattr(cls, field) for _, cls in TASK_SOURCES.items()]


def load_task_pair(t: TaskConfig) -> tuple[Task, Task]:
    return _source(t, "task_key").pair(t)


def load_data(d: DataConfig, role: str) -> Task:
    task = _source(d, "data_key").data(d, role)
    if d.ids is not None:
        task = task.subset(d.ids)
    if d.limit is not None:
        task = task.subset([it.id for it in task.items[: d.limit]])
    if not task.items:
        raise ConfigError(f"{role}: no items")
    return task
