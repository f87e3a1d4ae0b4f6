"""The zoo's accuracy table: endpoints and hand-set merges on the held-out test split."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from evomerge.eval.evaluator import Evaluator
from evomerge.merge.disk import open_sources
from evomerge.merge.planner import MergePlan
from evomerge.recipe import load_recipe
from evomerge.zoo.data import zoo_task

TABLE_TASKS = ["add_it", "add_de", "add_en", "max_en", "max_it", "num_it"]


def hand_merges(zoo: Path) -> list[tuple[str, dict[str, Any]]]:
    """Simple hand-set merges of the cross-lingual pair and of the multi-task pair."""
    out = []
    for a, b in (("math_en", "lang_it"), ("math_en", "compare_en")):
        def models(params: dict[str, Any], a: str = a, b: str = b) -> list[dict[str, Any]]:
            return [{"model": str(zoo / a), "parameters": params},
                    {"model": str(zoo / b), "parameters": params}]

        out += [
            (f"linear 0.5/0.5 {a} + {b}", {"merge_method": "linear",
                                           "models": models({"weight": 0.5})}),
            (f"task arithmetic 1.0 {a} + {b}", {"merge_method": "task_arithmetic",
                                                "base_model": str(zoo / "base"),
                                                "models": models({"weight": 1.0})}),
            (f"TIES d=0.5 {a} + {b}", {"merge_method": "ties", "base_model": str(zoo / "base"),
                                        "models": models({"weight": 1.0, "density": 0.5}),
                                        "parameters": {"normalize": False}}),
        ]
    return out


def accuracy_table(zoo: Path, endpoints: list[str], tasks: list[str] | None = None,
                   log: Callable[[str], None] = print) -> list[tuple[str, dict[str, float]]]:
    """(row label, task -> test accuracy) for each endpoint and hand-set merge."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tasks = tasks or TABLE_TASKS
    test = {t: zoo_task(t, "test") for t in tasks}
    tok = AutoTokenizer.from_pretrained(zoo / "base")
    live = AutoModelForCausalLM.from_pretrained(zoo / "base", dtype=torch.float32)
    ev = Evaluator(live, tok, batch_size=256)
    rows = []

    def row(label: str) -> None:
        accs = {t: ev(task).accuracy for t, task in test.items()}
        log(f"{label:42s} " + " ".join(f"{t} {100 * a:5.1f}" for t, a in accs.items()))
        rows.append((label, accs))

    for name in endpoints:
        state = AutoModelForCausalLM.from_pretrained(zoo / name, dtype=torch.float32)
        live.load_state_dict(state.state_dict())
        row(name)
    for label, recipe in hand_merges(zoo):
        r = load_recipe(recipe)
        MergePlan.build(r, open_sources(r)).merge_into(live)
        row(label)
    return rows


def markdown(rows: list[tuple[str, dict[str, float]]]) -> str:
    tasks = list(rows[0][1])
    lines = ["| model | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for label, accs in rows:
        lines.append(f"| {label} | " + " | ".join(f"{100 * accs[t]:.1f}" for t in tasks) + " |")
    return "\n".join(lines)
