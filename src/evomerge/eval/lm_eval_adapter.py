"""lm-evaluation-harness adapter (extra ``[lm-eval]``): any lm-eval task, in-memory model,
per-item correctness aligned to doc ids.

The live model object is wrapped (``HFLM(pretrained=model)``), so weights swapped in place by
the search loop are what lm-eval evaluates; no checkpoint is written or reloaded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evomerge.errors import ConfigError
from evomerge.eval.evaluator import EvalResult


def _import() -> Any:
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ConfigError("lm-eval tasks need `pip install evomerge[lm-eval]`") from None
    return lm_eval, HFLM, TaskManager


class LMEvalRunner:
    """Runs lm-eval tasks on one live model; build once, call per candidate."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, batch_size: int = 16,
                 include_path: str | Path | None = None, num_fewshot: int | None = None
                 ) -> None:
        _, hflm, task_manager = _import()
        logging.getLogger("lm_eval").setLevel(logging.ERROR)
        self.lm = hflm(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        self.tasks = task_manager(include_path=str(include_path) if include_path else None,
                                  verbosity="ERROR")
        self.num_fewshot = num_fewshot

    def __call__(self, task: str, doc_ids: Sequence[int] | None = None,
                 metric: str | None = None) -> EvalResult:
        """Per-item correctness on ``task`` (restricted to ``doc_ids`` when given).

        ``metric`` is the per-sample metric to read (default: the task's first, e.g. ``acc``
        or ``exact_match``); a sample counts as correct when it is > 0.5.
        """
        if task not in self.tasks.all_tasks:
            raise ConfigError(f"unknown lm-eval task {task!r} (add its YAML folder with "
                              "include_path)")
        by_id, results = logged_samples(self.lm, task, task, self.tasks,
                                        [int(i) for i in doc_ids] if doc_ids else None,
                                        self.num_fewshot)
        samples = [by_id[i] for i in sorted(by_id)]
        name = metric or first_metric(results)
        if samples and name not in samples[0]:
            raise ConfigError(f"lm-eval task {task!r} logs no per-sample metric {name!r}")
        values = np.array([float(s[name]) for s in samples])
        outputs = [sample_output(s) for s in samples]
        return EvalResult(task=task, ids=[str(s["doc_id"]) for s in samples],
                          correct=values > 0.5, outputs=outputs, extra={"metric": name})


def logged_samples(lm: Any, task: Any, name: str, manager: Any,
                   doc_ids: Sequence[int] | None, num_fewshot: int | None
                   ) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """lm-eval's logged samples by doc id and its aggregate results for ``task`` (a task name
    or a loaded task object named ``name``), on ``doc_ids`` of its evaluated documents (None:
    all of them)."""
    from unittest import mock

    import lm_eval.evaluator

    lm_eval = _import()[0]
    # lm-eval records the git commit of the working directory by running `git describe`,
    # whose "fatal: not a git repository" reached the terminal once per candidate outside a
    # git work tree; evomerge does not use that hash
    with mock.patch.object(lm_eval.evaluator, "get_git_commit_hash", lambda: None):
        out = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=manager,
                                      samples={name: sorted(doc_ids)} if doc_ids is not None
                                      else None, num_fewshot=num_fewshot, log_samples=True,
                                      bootstrap_iters=0)
    return {int(s["doc_id"]): s for s in out["samples"][name]}, out["results"][name]


def sample_output(sample: dict[str, Any]) -> str:
    """The filtered model output lm-eval logged for one sample."""
    return str(sample["filtered_resps"][0]) if sample.get("filtered_resps") else ""


def first_metric(results: dict[str, Any]) -> str:
    """'acc,none' -> 'acc' (the first metric lm-eval reports for a task)."""
    for key in results:
        if "," in key and not key.endswith("_stderr") and "_stderr," not in key:
            return key.split(",")[0]
    raise ConfigError("lm-eval reported no metric")


def lm_eval_correctness(model: torch.nn.Module, tokenizer: Any, task: str,
                        doc_ids: Sequence[int] | None = None, **options: Any) -> EvalResult:
    """One-shot form of ``LMEvalRunner``."""
    metric = options.pop("metric", None)
    return LMEvalRunner(model, tokenizer, **options)(task, doc_ids, metric)
