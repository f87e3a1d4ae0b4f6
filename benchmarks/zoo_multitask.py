"""The zoo's multi-task pair: simple merges of math_en and compare_en chosen on the search
split, measured on the held-out test split.

    python benchmarks/zoo_multitask.py

Grid: task arithmetic and TIES (densities 0.5 / 0.7 / 0.9, no normalisation) with weight
0.9 or 1.0 for math_en and 0.2 to 0.5 for compare_en. Every grid point is scored by the mean
accuracy over add_en and max_en on the search split; the ranking and the test-split scores
go to benchmarks/results/zoo_multitask.json (docs/zoo.md quotes it).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
TASKS = ("add_en", "max_en")


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from evomerge.eval.evaluator import Evaluator
    from evomerge.merge.disk import open_sources
    from evomerge.merge.planner import MergePlan
    from evomerge.recipe import load_recipe
    from evomerge.zoo.data import zoo_task
    from evomerge.zoo.manifest import ZOO_DIR

    hf_logging.disable_progress_bar()
    torch.set_num_threads(2)
    zoo = ZOO_DIR
    tok = AutoTokenizer.from_pretrained(zoo / "base")
    live = AutoModelForCausalLM.from_pretrained(zoo / "base", dtype=torch.float32)
    ev = Evaluator(live, tok, batch_size=256)
    splits = {s: {t: zoo_task(t, s) for t in TASKS} for s in ("search", "test")}

    def scores() -> dict[str, dict[str, float]]:
        return {s: {t: 100 * ev(task).accuracy for t, task in tasks.items()}
                for s, tasks in splits.items()}

    endpoints = {}
    for name in ("math_en", "compare_en"):
        live.load_state_dict(AutoModelForCausalLM.from_pretrained(
            zoo / name, dtype=torch.float32).state_dict())
        endpoints[name] = scores()
    rows = []
    for method, densities in (("task_arithmetic", (None,)), ("ties", (0.5, 0.7, 0.9))):
        for w1 in (0.9, 1.0):
            for w2 in (0.2, 0.25, 0.3, 0.35, 0.4, 0.5):
                for d in densities:
                    p1, p2 = {"weight": w1}, {"weight": w2}
                    if d is not None:
                        p1["density"] = p2["density"] = d
                    recipe = {"merge_method": method, "base_model": str(zoo / "base"),
                              "models": [{"model": str(zoo / "math_en"), "parameters": p1},
                                         {"model": str(zoo / "compare_en"), "parameters": p2}]}
                    if method == "ties":
                        recipe["parameters"] = {"normalize": False}
                    r = load_recipe(recipe)
                    MergePlan.build(r, open_sources(r)).merge_into(live)
                    label = f"{method} w {w1}/{w2}" + (f" d {d}" if d is not None else "")
                    rows.append({"merge": label, **scores()})
                    print(label, {s: round(sum(v.values()) / 2, 2)
                                  for s, v in rows[-1].items() if s != "merge"}, flush=True)

    def mean(r: dict, split: str) -> float:
        return sum(r[split].values()) / len(TASKS)

    rows.sort(key=lambda r: -mean(r, "search"))
    best_endpoint = max(mean(e, "test") for e in endpoints.values())
    result = {"endpoints": endpoints, "ranking": rows,
              "chosen": rows[0]["merge"], "chosen_test_mean": mean(rows[0], "test"),
              "best_endpoint_test_mean": best_endpoint,
              "margin": mean(rows[0], "test") - best_endpoint}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "zoo_multitask.json").write_text(json.dumps(result, indent=2))
    for r in rows[:5]:
        print(f"{r['merge']:32s} search {mean(r, 'search'):.2f} test {mean(r, 'test'):.2f} "
              + " ".join(f"{t} {r['test'][t]:.1f}" for t in TASKS))
    print(f"chosen on search: {rows[0]['merge']}: test mean {mean(rows[0], 'test'):.2f} vs "
          f"best endpoint {best_endpoint:.2f} -> {result['margin']:+.2f} points")


if __name__ == "__main__":
    main()
