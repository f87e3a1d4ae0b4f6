"""Search strategies at the same item budget on the demo zoo: SMAC + Hyperband over the LFS
space vs a pymoo GA over per-model task-arithmetic weights vs random search over the same.

    python benchmarks/search_comparison.py [--budget 6000] [--seeds 3]

Target: arithmetic asked in Italian (`add_it`) from the zoo's math and Italian experts.
A fourth arm, SMAC + Hyperband over the per-model weights, separates the optimizer's
effect from the space's.
Every strategy runs through `evomerge.evolve` until it has evaluated ``--budget`` search
items in all (SMAC: fidelities 24 to 241 items, eta 3, LFS with layer groups of 2; GA and
random: population 10, fitness = mean over a fixed random subset of 50 search items). After
every 250 items, the incumbent (best estimate so far; for SMAC, at the highest budget seen) is
scored on the 241 held-out test items. Results to benchmarks/results/search_comparison.json
and docs/search_comparison.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEP = 250


def strategies(budget: int) -> dict[str, dict]:
    per_model = {"type": "per_model", "weight": [0, 2]}
    subset = {"subset_size": 50, "estimator": "mean", "extraction": "random",
              "calibration_merges": 0}
    return {
        "SMAC + Hyperband, LFS": {
            "space": {"type": "lfs", "layer_granularity": 2, "weight": [0, 2]},
            "optimizer": {"name": "smac", "trials": 100_000, "item_budget": budget}},
        "SMAC + Hyperband, per-model weights": {
            "space": per_model, "merge_method": "task_arithmetic",
            "optimizer": {"name": "smac", "trials": 100_000, "item_budget": budget}},
        "GA, per-model weights": {
            "space": per_model, "fitness": subset, "merge_method": "task_arithmetic",
            "optimizer": {"name": "ga", "pop_size": 10, "generations": 10_000,
                          "item_budget": budget}},
        "random search, per-model weights": {
            "space": per_model, "fitness": subset, "merge_method": "task_arithmetic",
            "optimizer": {"name": "random", "pop_size": 10, "generations": 10_000,
                          "item_budget": budget}},
    }


def incumbents(run_dir: Path, budget: int) -> list[tuple[int, dict]]:
    """(items used, incumbent recipe) after every STEP items."""
    recs = [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text()
            .splitlines()]
    recs = [r for r in recs if r["kind"] == "candidate"]
    used, best, best_key, out, mark = 0, None, None, [], STEP
    for r in recs:
        used += len(r["tasks"]["add_it"]["ids"])
        key = (r.get("budget", 0), r["estimates"]["add_it"])
        if best_key is None or key > best_key:
            best, best_key = r["recipe"], key
        while used >= mark and mark <= budget:
            out.append((mark, best))
            mark += STEP
    while mark <= budget:
        out.append((mark, best))
        mark += STEP
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=6000)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.config import load_config
    from evomerge.eval.evaluator import Evaluator
    from evomerge.io.checkpoint import Checkpoint
    from evomerge.merge.live import LiveMerger
    from evomerge.recipe import MergeRecipe
    from evomerge.run.loop import evolve
    from evomerge.zoo.data import zoo_task
    from evomerge.zoo.manifest import ZOO_DIR

    torch.set_num_threads(2)
    zoo = ZOO_DIR
    test = zoo_task("add_it", "test")
    live = AutoModelForCausalLM.from_pretrained(zoo / "base", dtype=torch.float32)
    ev = Evaluator(live, AutoTokenizer.from_pretrained(zoo / "base"), batch_size=256)
    merger = LiveMerger(live, {str(zoo / m): Checkpoint(zoo / m)
                               for m in ("base", "math_en", "lang_it")})
    cache: dict[str, float] = {}

    def test_accuracy(recipe: dict) -> float:
        k = json.dumps(recipe, sort_keys=True)
        if k not in cache:
            merger.apply(MergeRecipe.model_validate(recipe))
            cache[k] = 100 * ev(test).accuracy
        return cache[k]

    curves: dict[str, list[list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, over in strategies(args.budget).items():
            for seed in range(args.seeds):
                run_dir = Path(tmp) / f"{label[:4]}-{label[-8:-4]}-{seed}"
                cfg = {"base_model": str(zoo / "base"),
                       "models": [str(zoo / "math_en"), str(zoo / "lang_it")],
                       "tasks": [{"name": "add_it", "zoo": "add_it"}], "seed": seed,
                       "run_dir": str(run_dir), "write_best": False, "test_top_k": 1, **over}
                evolve(load_config(cfg))
                curve = [test_accuracy(r) for _, r in incumbents(run_dir, args.budget)]
                curves.setdefault(label, []).append(curve)
                print(f"{label}, seed {seed}: held-out {curve[-1]:.1f} % after "
                      f"{args.budget} items", flush=True)
    marks = list(range(STEP, args.budget + 1, STEP))
    summary = {label: {"mean": [statistics.mean(c[i] for c in cs) for i in range(len(marks))],
                       "std": [statistics.stdev(c[i] for c in cs) if len(cs) > 1 else 0.0
                               for i in range(len(marks))], "runs": cs}
               for label, cs in curves.items()}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "search_comparison.json").write_text(json.dumps(
        {"items": marks, "strategies": summary}, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for label, v in summary.items():
        m, s = v["mean"], v["std"]
        ax.plot(marks, m, label=label)
        ax.fill_between(marks, [a - b for a, b in zip(m, s, strict=True)],
                        [a + b for a, b in zip(m, s, strict=True)], alpha=0.2)
    ax.set_xlabel("search items evaluated")
    ax.set_ylabel("held-out add_it accuracy of the incumbent (%)")
    ax.set_title(f"demo zoo, {args.seeds} seeds (mean +- std)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE.parent / "docs" / "search_comparison.png", dpi=120)
    for label, v in summary.items():
        print(f"{label:36s} " + " ".join(f"{m:5.1f}" for m in v["mean"][3::4]))


if __name__ == "__main__":
    main()
