"""Evaluations with a memory: a job (a recipe on some items of every task) is answered from
the run record when it was evaluated before, else run on the backend and appended to the
record the moment it completes, so no finished evaluation is ever lost or repeated."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from evomerge.errors import EvomergeError
from evomerge.recipe import MergeRecipe
from evomerge.run.backends import Backend
from evomerge.run.store import RunStore, recipe_key

Progress = Callable[[str, int, int, str], None]  # (phase, done, total, message)
# task -> item ids to evaluate (None: the whole split)
Items = dict[str, list[str] | None]
# (job index, per-task results) -> estimated accuracy per task, for candidate records
Estimate = Callable[[int, dict[str, Any]], dict[str, float]]


class TaskResult(TypedDict):
    ids: list[str]
    correct: list[int]
    accuracy: float


class EvalRecord(TypedDict, total=False):
    """One line of evaluations.jsonl."""

    key: str  # recipe_key(recipe, kind, split, items)
    kind: str  # calibration | candidate | validation | test
    split: str  # search | test
    recipe: dict[str, Any]
    tasks: dict[str, TaskResult]
    seconds: dict[str, float]  # merge and eval wall time
    worker: int
    estimates: dict[str, float]  # candidates: estimated accuracy per task
    genome: list[float]  # candidates: the genome, repaired
    generation: int  # candidates: generation (or trial number)
    index: int  # candidates: position in the generation
    budget: int  # multi-fidelity candidates: items per task


@dataclass
class EvalJob:
    kind: str
    recipe: MergeRecipe
    items: Items
    split: str = "search"
    extra: dict[str, Any] = field(default_factory=dict)  # candidate fields of the record

    def key(self) -> tuple[str, dict[str, Any]]:
        recipe_json = self.recipe.model_dump(mode="json", exclude_none=True)
        scope = [self.kind, self.split] + [f"{t}:" + ",".join(v or ["all"])
                                           for t, v in sorted(self.items.items())]
        return recipe_key(recipe_json, *scope), recipe_json


class Evaluations:
    def __init__(self, store: RunStore, backend: Backend, progress: Progress) -> None:
        self.store, self.backend, self.progress = store, backend, progress
        self.new = 0  # evaluations run by this process
        self.failures: list[str] = []  # why candidates could not be merged or evaluated
        self.on_candidate: Callable[[EvalRecord], None] = lambda rec: None
        # (done before this batch, total of the phase): progress over a whole search rather
        # than per batch of jobs; None: the batch is the phase
        self.span: tuple[int, int] | None = None
        self._rate: dict[str, list[Any]] = {}

    def run(self, jobs: list[EvalJob], phase: str, message: Callable[[], str] = lambda: "",
            estimate: Estimate | None = None) -> list[EvalRecord]:
        """Records of every job, in job order: recorded ones from the store, the rest run on
        the backend and appended to the store as each completes."""
        keys: list[str] = []
        todo: dict[str, int] = {}  # key -> payload index
        payloads: list[tuple[dict[str, Any], Items, str]] = []
        for job in jobs:
            key, recipe_json = job.key()
            keys.append(key)
            if self.store.get(key) is None and key not in todo:
                todo[key] = len(payloads)
                payloads.append((recipe_json, job.items, job.split))
        payload_keys = list(todo)  # payload index -> key
        first: dict[str, int] = {}
        for i, k in enumerate(keys):  # a duplicate job shares the first one's record
            first.setdefault(k, i)
        done = len(jobs) - len(payloads)
        base, total = self.span if self.span is not None else (0, len(jobs))
        if phase not in self._rate:  # items evaluated, and when the phase started
            self._rate[phase] = [0, time.monotonic()]

        def speed() -> str:
            items, start = self._rate[phase]
            elapsed = time.monotonic() - start
            return f" | {items / elapsed:.0f} items/s" if items and elapsed > 0 else ""

        def on_done(j: int, result: dict[str, Any]) -> None:
            nonlocal done
            key = payload_keys[j]
            job = jobs[first[key]]
            record: EvalRecord = {"key": key, "kind": job.kind, "split": job.split,  # type: ignore[typeddict-item]
                                  "recipe": payloads[j][0], "tasks": result["tasks"],
                                  "seconds": result["seconds"], "worker": result["worker"],
                                  **job.extra}
            if result.get("notes"):  # what the evaluator adapted, and the batch it kept
                record["notes"] = result["notes"]  # type: ignore[typeddict-unknown-key]
                record["batch_size"] = result["batch_size"]  # type: ignore[typeddict-unknown-key]
            if job.kind == "candidate":
                assert estimate is not None
                record["estimates"] = estimate(first[key], result["tasks"])
                self.on_candidate(record)
            self.store.add(dict(record))
            self.new += 1
            done += 1
            self._rate[phase][0] += sum(len(t["ids"]) for t in result["tasks"].values())
            activity = self.backend.activity()
            self.progress(phase, min(base + done, total), total,
                          message() + speed() + (f" | {activity}" if activity else ""))

        self.progress(phase, min(base + done, total), total, message())
        if payloads:
            self.backend.run(payloads, on_done)
        return [self.store.get(k) for k in keys]  # type: ignore[misc]

    def run_tolerant(self, jobs: list[EvalJob], phase: str, message: Callable[[], str],
                     estimate: Estimate) -> list[EvalRecord | None]:
        """``run`` for search candidates: a job whose merge or evaluation fails with a
        user-level error (e.g. a linear group whose weights sum to 0) gives None, to be
        scored as the worst, instead of stopping the search."""
        try:
            return list(self.run(jobs, phase, message, estimate))
        except EvomergeError:  # find which: one by one (finished ones come from the store)
            out: list[EvalRecord | None] = []
            for k, job in enumerate(jobs):
                try:
                    out.append(self.run([job], phase, message,
                                        lambda _, tasks, k=k: estimate(k, tasks))[0])
                except EvomergeError as exc:
                    self.failures.append(str(exc))
                    out.append(None)
            return out
