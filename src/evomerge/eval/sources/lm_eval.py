"""lm-eval-harness tasks by name or YAML path (extra ``[lm-eval]``; eval/lm_eval_tasks.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from evomerge.errors import ConfigError
from evomerge.eval.sources.base import TASK_SOURCES, TaskSource
from evomerge.eval.tasks import Task

if TYPE_CHECKING:
    from evomerge.config import DataConfig, TaskConfig
    from evomerge.eval.lm_eval_tasks import LMEvalTask


def lm_eval_task(t: TaskConfig) -> LMEvalTask:
    """The lm-eval task of a task config, loaded once per process."""
    from evomerge.eval.lm_eval_tasks import cached_lm_eval_task

    return cached_lm_eval_task(t.lm_eval, t.include_path, t.num_fewshot, t.metric,  # type: ignore[arg-type]
                               t.search_size, t.test_size, t.split_seed)


@TASK_SOURCES.register("lm_eval")
class LMEvalSource(TaskSource):
    task_key = data_key = "lm_eval"

    def pair(self, t: TaskConfig) -> tuple[Task, Task]:
        return lm_eval_task(t).as_tasks(t.name)

    def data(self, d: DataConfig, role: str) -> Task:
        from evomerge.eval.lm_eval_tasks import cached_lm_eval_task

        lm = cached_lm_eval_task(d.lm_eval, d.include_path)  # type: ignore[arg-type]
        if lm.test_task.get_config("output_type") != "generate_until":
            raise ConfigError(f"{role}: lm-eval task {lm.name!r} is not generative; NP Merge "
                              "learns from answer texts")
        return Task(role, tuple(lm.items(d.split)))
