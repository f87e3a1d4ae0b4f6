"""Task files: JSONL, CSV, Parquet or a local ``datasets`` directory (eval/tasks.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from evomerge.errors import ConfigError
from evomerge.eval.sources.base import TASK_SOURCES, TaskSource
from evomerge.eval.tasks import Task, load_task

if TYPE_CHECKING:
    from evomerge.config import DataConfig, TaskConfig


@TASK_SOURCES.register("files")
class FileSource(TaskSource):
    task_key, data_key = "search", "file"

    def pair(self, t: TaskConfig) -> tuple[Task, Task]:
        if not t.test:
            raise ConfigError(f"task {t.name}: a held-out test file is required")
        options = dict(t.options)  # search_split / test_split: splits of one datasets dir
        splits = {k: options.pop(f"{k}_split", options.get("split")) for k in ("search", "test")}
        options.pop("split", None)
        return (load_task(t.search, name=t.name + "/search", fewshot_from=t.fewshot_from,  # type: ignore[arg-type]
                          split=splits["search"], **options),
                load_task(t.test, name=t.name + "/test", fewshot_from=t.fewshot_from,
                          split=splits["test"], **options))

    def data(self, d: DataConfig, role: str) -> Task:
        return load_task(d.file, name=role, **d.options)  # type: ignore[arg-type]
