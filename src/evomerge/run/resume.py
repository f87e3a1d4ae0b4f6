"""What a resumed run may change: the run's config and its inputs' fingerprints are kept in
``run.json`` when it starts; ``--resume`` compares them with the config given (or the edited
``config.yaml``) and the inputs as they are now.

Recorded evaluations are answers to "this recipe, on these items, with these models": a
setting that changes any of that (models, method, space, tasks, fitness, seed, dtype, the
optimizer's algorithm) would mix incompatible answers, so it is refused with the keys named.
Extensions are allowed: more generations or trials, a larger item budget, and settings that
only decide where or how fast evaluations run (device, backend, batch size, offload) or what
is done at the end (final, test_top_k, write_best).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evomerge.config import EvolveConfig
from evomerge.errors import ConfigError
from evomerge.io.fingerprint import file_fingerprint
from evomerge.io.outdir import atomic_write_text

if TYPE_CHECKING:
    from evomerge.run.search import TaskState

RUN_INFO = "run.json"
TASK_KEY = "task items: "  # the fingerprints of tasks' loaded items start with this
# key -> "grow": may only increase (None = unlimited counts as the largest); "any": free
SAFE = {"optimizer.generations": "grow", "optimizer.trials": "grow",
        "optimizer.item_budget": "grow", "optimizer.patience": "grow", "test_top_k": "any",
        "write_best": "any", "device": "any", "offload": "any", "batch_size": "any",
        "run_dir": "any", "final.top_k": "any", "final.baselines": "any",
        "final.pareto_max": "any",
        "memory_check": "any"}
SAFE_PREFIXES = ("backend.",)


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): obj}


def fingerprints(config: EvolveConfig) -> dict[str, str]:
    """Every input a recorded answer depends on: model files (weights, config, tokenizer)
    and task files."""
    out: dict[str, str] = {}
    for m in dict.fromkeys([config.base_model, *config.models]):
        d = Path(m)
        if d.is_dir():
            for f in sorted(d.iterdir()):
                if f.is_file() and not f.name.startswith("."):
                    out[f"{m}/{f.name}"] = file_fingerprint(f)
    for t in config.tasks:
        for p in (t.search, t.test, t.lm_eval):
            if p and Path(p).is_file():
                out[p] = file_fingerprint(Path(p))
    return out


def task_fingerprints(tasks: Sequence[TaskState]) -> dict[str, str]:
    """Each task's search and test items as loaded (ids, prompts, answers, choices): what
    file fingerprints miss (a datasets directory, a Hub dataset, an lm-eval task's data
    files) changes these."""
    out = {}
    for ts in tasks:
        for split, task in (("search", ts.search), ("test", ts.test)):
            rows = [[it.id, it.prompt, it.answer, list(it.choices or ())] for it in task.items]
            digest = hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()
            out[f"{TASK_KEY}{ts.name}/{split}"] = digest
    return out


def write_run_info(run_dir: Path, config: EvolveConfig, tasks: Sequence[TaskState]) -> None:
    info = {"config": config.model_dump(mode="json"),
            "fingerprints": {**fingerprints(config), **task_fingerprints(tasks)}}
    atomic_write_text(run_dir / RUN_INFO, json.dumps(info, indent=1) + "\n")


def check_task_items(run_dir: Path, tasks: Sequence[TaskState]) -> None:
    """Refuse a resume whose tasks' items changed since the run started (runs from before
    these fingerprints were recorded have none to compare)."""
    old = {k: v for k, v in (_run_info(run_dir) or {}).get("fingerprints", {}).items()
           if k.startswith(TASK_KEY)}
    if not old:
        return
    now = task_fingerprints(tasks)
    changed = sorted(k for k in set(old) | set(now) if old.get(k) != now.get(k))
    if changed:
        name = changed[0].removeprefix(TASK_KEY)
        raise ConfigError(f"the items of task {name} changed since the run started (its data "
                          "was edited or replaced): the recorded evaluations answered the old "
                          "ones; start a new run")


def _run_info(run_dir: Path) -> dict[str, Any] | None:
    """run.json as recorded (None for a run from before run.json: nothing to compare)."""
    path = run_dir / RUN_INFO
    if not path.exists():
        return None
    try:
        info = json.loads(path.read_text())
    except ValueError:
        raise _damaged(path) from None
    if not isinstance(info, dict):
        raise _damaged(path)
    return info


def _damaged(path: Path) -> ConfigError:
    return ConfigError(f"{path} is damaged; it records what the run was started with, so "
                       "the run cannot be resumed safely")


def check_resume(run_dir: Path, config: EvolveConfig) -> None:
    """Refuse a resume whose config or inputs changed what the record's evaluations mean."""
    info = _run_info(run_dir)
    if info is None:
        return
    try:
        old = _flat(info["config"])
        old_prints = {k: v for k, v in dict(info["fingerprints"]).items()
                      if not k.startswith(TASK_KEY)}  # compared by check_task_items
    except (KeyError, TypeError, ValueError):
        raise _damaged(run_dir / RUN_INFO) from None
    new = _flat(config.model_dump(mode="json"))
    refused, shrunk = [], []
    # a key only the old config has is an option its component no longer declares (runs
    # written before components had their own options carried every component's options);
    # the component itself is compared by its name/type key
    for key in sorted(new):
        a, b = old.get(key), new.get(key)
        if a == b or key.startswith(SAFE_PREFIXES) or SAFE.get(key) == "any":
            continue
        if SAFE.get(key) == "grow":
            if b is None or (a is not None and b >= a):
                continue
            shrunk.append(f"{key} ({a} -> {b})")
            continue
        refused.append(key)
    if refused:
        raise ConfigError(
            f"the config differs from the run's in {', '.join(refused)}: that changes what "
            "is evaluated, so the recorded evaluations would not apply; start a new run "
            "(another run_dir, or --fresh to discard this one)")
    if shrunk:
        raise ConfigError(f"resume can extend a run, not shrink it: {', '.join(shrunk)}")
    now = fingerprints(config)
    changed = sorted(k for k in set(old_prints) | set(now) if old_prints.get(k) != now.get(k))
    if changed:
        raise ConfigError(f"{changed[0]} changed since the run started"
                          + (f" (and {len(changed) - 1} more files)" if len(changed) > 1 else "")
                          + ": the recorded evaluations used the old one; start a new run")
