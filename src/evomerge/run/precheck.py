"""Before a search: the input models, base included, scored on the first items of every
task's search split, so scores that cannot be right are said before hours are spent.

A task whose answers are spelled differently from what the models write (the wrong field
mapped as the answer, a delimiter, a chat model asked without its chat template, a stop
string that cuts every answer) scores every model 0 %, and a search over zeros "chooses"
noise. None of that is an error evomerge can prove, so it is one clear warning with the
likely causes and how to look, recorded in the run's notes; the search goes on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from evomerge.run.baselines import input_recipes
from evomerge.run.evaluations import EvalJob, Evaluations
from evomerge.run.search import TaskState

CHECK_ITEMS = 20  # search items per task each input is scored on
# another input's score that shows a task can be scored (1 item of 20 is noise: the demo's
# English math expert scores 0 % on Italian arithmetic and the Italian expert 1.7 %, by design)
CLEARLY = 0.25


def _causes(config: str) -> str:
    return ("likely causes: the field mapped as the answer (answer_field / answer_template), "
            "target_delimiter, chat: true for a chat model, stop strings or max_new_tokens "
            "that cut the answer; look at the models' answers with `evomerge eval MODEL "
            f"--tasks {config} --split search --json answers.json`")


def _words(name: str) -> set[str]:
    return {w for w in re.split(r"[^a-z0-9]+", name.lower()) if len(w) >= 3}


def check_inputs(cfg: Any, tasks: list[TaskState], evals: Evaluations,
                 config_path: str = "CONFIG") -> list[str]:
    """Warnings (possibly none) from the inputs' scores on a slice of each task; the
    evaluations are recorded like any other (resume answers them from the record)."""
    recipes = input_recipes(cfg.base_model, cfg.models)
    items = {ts.name: ts.search.ids[:CHECK_ITEMS] for ts in tasks}
    n = min(len(v) for v in items.values())
    recs = evals.run([EvalJob("check", r, dict(items)) for r in recipes.values()],
                     "check inputs", lambda: f"the input models on {n} items per task")
    acc = {label: {t: r["accuracy"] for t, r in rec["tasks"].items()}
           for label, rec in zip(recipes, recs, strict=True)}
    return input_warnings(acc, [ts.name for ts in tasks], n, config_path)


def input_warnings(acc: dict[str, dict[str, float]], names: list[str], n: int,
                   config_path: str = "CONFIG") -> list[str]:
    """The warnings for the inputs' accuracies ``acc`` (label -> task -> accuracy on ``n``
    items; the base labelled "base")."""
    causes = _causes(config_path)
    unless = ("unless no input is expected to have the skill on its own (a merge that creates "
              "it), the scores are probably not measuring the models")
    if all(a[t] == 0 for a in acc.values() for t in names):
        return [f"every input model, base included, scores 0 % on the first {n} search items "
                f"of every task: {unless}; {causes}"]
    out = []
    for t in names:
        if all(a[t] == 0 for a in acc.values()):
            out.append(f"task {t!r}: every input model scores 0 % on its first {n} search "
                       f"items: {unless}; {causes}")
    for label, a in acc.items():
        if label != "base" and all(a[t] == 0 for t in names) and any(
                acc[o][t] >= CLEARLY for o in acc for t in names):
            out.append(f"model {label!r} scores 0 % on the first {n} search items of every "
                       f"task while other inputs do not; {causes}")
            continue
        for t in names:  # an expert named for a task that does no better than the base
            if label != "base" and _words(Path(label).name) & _words(t) and (
                    a[t] <= acc["base"][t] < 1):
                out.append(f"model {label!r} is named like task {t!r} but scores "
                           f"{100 * a[t]:.0f} % there, no better than the base "
                           f"({100 * acc['base'][t]:.0f} %) on {n} items; {causes}")
    return out
