"""Task sources: where a task's items come from (the zoo, files, lm-eval). Each source is
one module here, registered in ``TASK_SOURCES``; a task config names its source by the key
it sets (``zoo:``, ``search:``/``test:`` files, ``lm_eval:``)."""

from evomerge.eval.sources.base import TASK_SOURCES, TaskSource, load_data, load_task_pair

__all__ = ["TASK_SOURCES", "TaskSource", "load_data", "load_task_pair"]
