"""lm-eval tasks as search tasks (extra ``[lm-eval]``): a task named in an evolve config
(``lm_eval: arc_challenge_it`` or a task YAML path) becomes a search split and a held-out
test split of lm-eval documents, scored by lm-eval itself on the live model.

Item ids are lm-eval's doc ids, so the run record, IRT calibration, subsets, the fitness cache,
resume and budgets work as for any task. Splits: where the task has validation and test
documents, the search split is drawn from validation and the test split from test; otherwise
one seeded permutation of the evaluated documents is cut in two disjoint parts.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evomerge.errors import ConfigError
from evomerge.eval.evaluator import EvalResult
from evomerge.eval.lm_eval_adapter import _import, first_metric, logged_samples, sample_output
from evomerge.eval.tasks import Item, Task


@dataclass
class LMEvalTask:
    """One lm-eval task, loaded once: its search and test documents and its metric."""

    name: str  # the lm-eval task name
    search_task: Any  # lm-eval Task objects whose evaluated docs hold each split
    test_task: Any
    search_ids: list[int]
    test_ids: list[int]
    metric: str
    higher_is_better: bool
    num_fewshot: int | None
    task_manager: Any

    def split(self, split: str) -> tuple[Any, list[int]]:
        """(the lm-eval task object whose evaluated docs hold ``split``, its doc ids)."""
        if split == "search":
            return self.search_task, self.search_ids
        return self.test_task, self.test_ids

    def items(self, split: str) -> list[Item]:
        """evomerge items (id = doc id) of a split, for ids, counts and the report."""
        task, ids = self.split(split)
        docs = task.eval_docs
        out = []
        for i in ids:
            doc = docs[int(i)]
            out.append(Item(id=str(i), prompt=str(task.doc_to_text(doc)),
                            answer=str(task.doc_to_target(doc))))
        return out

    def as_tasks(self, label: str) -> tuple[Task, Task]:
        return (Task(f"{label}/search", tuple(self.items("search"))),
                Task(f"{label}/test", tuple(self.items("test"))))

    def evaluate(self, lm: Any, split: str, ids: Sequence[str] | None) -> EvalResult:
        """lm-eval's per-sample verdicts on ``ids`` of ``split`` (None: the whole split)."""
        task, split_ids = self.split(split)
        order = [int(i) for i in ids] if ids is not None else split_ids
        # lm-eval draws tqdm bars on stderr for every call: one search would print
        # thousands; evomerge's own progress line says where the search is
        with contextlib.redirect_stderr(io.StringIO()):
            samples, _ = logged_samples(lm, task, self.name, self.task_manager, order,
                                        self.num_fewshot)
        values = np.array([float(samples[i][self.metric]) for i in order])
        if np.any((values != 0) & (values != 1)):
            raise ConfigError(f"lm-eval task {self.name!r}: metric {self.metric!r} is not 0/1 "
                              "per item; a search needs per-item correctness (acc, acc_norm, "
                              "exact_match, ...): choose one with the task option metric")
        correct = values > 0.5 if self.higher_is_better else values < 0.5
        return EvalResult(task=self.name, ids=[str(i) for i in order], correct=correct,
                          outputs=[sample_output(samples[i]) for i in order],
                          extra={"metric": self.metric})


def load_lm_eval_task(spec: str, *, include_path: str | None = None,
                      num_fewshot: int | None = None, metric: str | None = None,
                      search_size: int | None = None, test_size: int | None = None,
                      split_seed: int = 0) -> LMEvalTask:
    """Load an lm-eval task by name (lm-eval's own tasks, or ones under ``include_path``) or
    from a task YAML path, and fix its search and test documents."""
    _, _, task_manager = _import()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    with contextlib.suppress(ImportError):  # "Generating test split" bars on every load
        import datasets

        datasets.disable_progress_bars()
    path = Path(spec)
    paths = [str(p) for p in (include_path,) if p]
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"lm-eval task file {path} does not exist")
        paths.append(str(path.resolve().parent))
    # only the given folders first: indexing lm-eval's 14,000 built-in tasks takes seconds
    manager = task_manager(include_path=paths or None, include_defaults=not paths)
    try:
        loaded = manager.load(str(path.resolve()) if path.suffix in (".yaml", ".yml")
                              else spec)
    except (KeyError, ValueError, TypeError) as exc:
        if paths and not path.suffix:
            manager = task_manager(include_path=paths)
            try:
                loaded = manager.load(spec)
            except (KeyError, ValueError, TypeError) as exc2:
                raise ConfigError(f"unknown lm-eval task {spec!r}: {exc2}") from None
        else:
            raise ConfigError(f"unknown lm-eval task {spec!r} (give a task name, a task YAML "
                              f"path, or its folder as include_path): {exc}") from None
    except Exception as exc:  # dataset loading raises many kinds (offline, missing files)
        raise ConfigError(f"lm-eval task {spec!r} cannot be loaded: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                          ) from None
    tasks = loaded["tasks"]
    if len(tasks) != 1:
        raise ConfigError(f"lm-eval {spec!r} is a group of {len(tasks)} tasks "
                          f"({', '.join(sorted(tasks)[:4])}, ...); name each task separately")
    name, task = next(iter(tasks.items()))
    metrics = list(task.higher_is_better())
    chosen = metric or _first(metrics)
    if chosen not in metrics:
        raise ConfigError(f"lm-eval task {name!r} has no metric {chosen!r} "
                          f"(it has {', '.join(metrics)})")
    higher = bool(task.higher_is_better()[chosen])
    if task.has_validation_docs() and task.has_test_docs():
        search_task = copy.copy(task)  # the validation docs as the evaluated split
        search_task._config = copy.copy(task._config)
        search_task._config.test_split = task._config.validation_split
        search_all = np.arange(len(search_task.eval_docs))
        test_all = np.arange(len(task.eval_docs))
        rng = np.random.default_rng(split_seed)
        search_ids = _take(rng.permutation(search_all), search_size, "search_size", name)
        test_ids = _take(rng.permutation(test_all), test_size, "test_size", name)
    else:
        search_task = task
        n = len(task.eval_docs)
        order = np.random.default_rng(split_seed).permutation(n)
        n_search = search_size if search_size is not None else n // 2
        if n_search >= n:
            raise ConfigError(f"lm-eval task {name!r}: search_size {n_search} leaves no test "
                              f"documents of its {n}")
        search_ids = sorted(order[:n_search].tolist())
        rest = order[n_search:]
        test_ids = _take(rest, test_size, "test_size", name)
    if not search_ids or not test_ids:
        raise ConfigError(f"lm-eval task {name!r} has too few documents to split")
    return LMEvalTask(name=name, search_task=search_task, test_task=task,
                      search_ids=search_ids, test_ids=test_ids, metric=chosen,
                      higher_is_better=higher, num_fewshot=num_fewshot, task_manager=manager)


@functools.lru_cache(maxsize=16)
def cached_lm_eval_task(spec: str, include_path: str | None = None,
                        num_fewshot: int | None = None, metric: str | None = None,
                        search_size: int | None = None, test_size: int | None = None,
                        split_seed: int = 0) -> LMEvalTask:
    """``load_lm_eval_task``, once per process for the same arguments (the search loop and
    its local worker share it)."""
    return load_lm_eval_task(spec, include_path=include_path, num_fewshot=num_fewshot,
                             metric=metric, search_size=search_size, test_size=test_size,
                             split_seed=split_seed)


def _first(metrics: list[str]) -> str:
    if not metrics:
        raise ConfigError("the lm-eval task reports no metric")
    return first_metric({f"{m},none": 0 for m in metrics})


def _take(order: np.ndarray, size: int | None, what: str, name: str) -> list[int]:
    if size is not None and size > len(order):
        raise ConfigError(f"lm-eval task {name!r}: {what} {size} exceeds its {len(order)} "
                          "documents")
    return sorted(order[: size if size is not None else len(order)].tolist())
