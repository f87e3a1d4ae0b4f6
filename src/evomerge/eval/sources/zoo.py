"""The demo zoo's generated tasks (``zoo: add_it``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from evomerge.eval.sources.base import TASK_SOURCES, TaskSource
from evomerge.eval.tasks import Task

if TYPE_CHECKING:
    from evomerge.config import DataConfig, TaskConfig


@TASK_SOURCES.register("zoo")
class ZooSource(TaskSource):
    task_key = data_key = "zoo"

    def pair(self, t: TaskConfig) -> tuple[Task, Task]:
        from evomerge.zoo.data import zoo_task

        return (zoo_task(t.zoo, "search", options=t.options, fewshot_from=t.fewshot_from),  # type: ignore[arg-type]
                zoo_task(t.zoo, "test", options=t.options, fewshot_from=t.fewshot_from))  # type: ignore[arg-type]

    def data(self, d: DataConfig, role: str) -> Task:
        from evomerge.zoo.data import zoo_task

        return zoo_task(d.zoo, d.split)  # type: ignore[arg-type]
