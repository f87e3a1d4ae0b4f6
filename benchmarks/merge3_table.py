"""The MERGE3 end-to-end table: which fitness gives the best final merge, at what cost.

    OMP_NUM_THREADS=1 python benchmarks/merge3_table.py [--seeds 5] [--targets ...] [--only ...]
    python benchmarks/merge3_table.py --markdown     # the table in docs/estimators.md

Every variant is a whole ``evomerge.evolve`` run on the committed zoo with the same search
(per-model task-arithmetic weights in [0, 2], GA population 16, 8 generations; SMAC: 128
trials, budgets 24..240) and the same final choice (the top 8 by estimate re-scored on the
whole search split with the input models and hand-set baselines). What changes is the fitness:
the mean over the whole 240-item search split, the mean of 20 or 50 random items, or the IRT
estimators on 20 items (random items or IRT anchors; a 1-D 2PL or a 2-D MIRT fitted on the
base, the endpoints and 24 random merges), or SMAC + Hyperband's mean over nested budgets.
Reported per variant over the seeds: held-out test accuracy of the final answer (mean, min),
how often a baseline had to be returned, and the fitness cost in item evaluations (the
search split items evaluated for calibration and candidates; the final validation, 15 x 240
items, is the same for all and not counted). Targets: ``cross_lingual`` = add_it from the
math and Italian experts; ``multi_task`` = the mean of add_it and max_it (the pair of tasks,
scored as one objective by their mean). Results to benchmarks/results/merge3_table.json.
Run alone: two torch processes on two cores slow each other down tens of times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def variants() -> dict[str, dict]:
    irt = {"subset_size": 20, "calibration_merges": 24}
    out: dict[str, dict] = {
        "mean, whole search split (240)": {"subset_size": 240, "estimator": "mean",
                                           "calibration_merges": 0},
        "mean, 50 random items": {"subset_size": 50, "estimator": "mean",
                                  "calibration_merges": 0},
        "mean, 20 random items": {"subset_size": 20, "estimator": "mean",
                                  "calibration_merges": 0},
    }
    for est in ("pirt", "gpirt", "mpirt", "gmpirt"):
        for extraction in ("random", "irt_anchors"):
            for kind, dims in (("2pl", 1), ("mirt", 2)):
                out[f"{est}, 20 {'anchors' if extraction != 'random' else 'random'}, "
                    f"{dims}-D"] = {**irt, "estimator": est, "extraction": extraction,
                                    "irt_kind": kind, "irt_dims": dims,
                                    **({"delta": "auto"} if est.startswith("g") else {})}
    out["SMAC + Hyperband, budgets 24..240"] = {"smac": True}
    # full evaluation at the IRT variants' cost (about 9000 items): 40 candidates, not 128
    out["mean, whole search split, 40 candidates"] = {
        "subset_size": 240, "estimator": "mean", "calibration_merges": 0,
        "optimizer": {"pop_size": 8, "generations": 5}}
    return out


def run(target: str, name: str, fitness: dict, seed: int, root: Path) -> dict:
    from evomerge.config import load_config
    from evomerge.run.loop import evolve
    from evomerge.zoo.manifest import ZOO_DIR

    z = ZOO_DIR
    tasks = [{"name": "add_it", "zoo": "add_it"}]
    if target == "multi_task":
        tasks.append({"name": "max_it", "zoo": "max_it"})
    cfg = {"base_model": str(z / "base"), "models": [str(z / "math_en"), str(z / "lang_it")],
           "merge_method": "task_arithmetic", "space": {"type": "per_model", "weight": [0, 2]},
           "tasks": tasks, "seed": seed, "write_best": False,
           "run_dir": str(root / f"{target}-{abs(hash(name))}-{seed}")}
    if fitness.get("smac"):
        cfg["optimizer"] = {"name": "smac", "trials": 128, "min_items": 24, "max_items": 240}
    else:
        fitness = dict(fitness)
        cfg["optimizer"] = {"name": "nsga2" if len(tasks) > 1 else "ga", "pop_size": 16,
                            "generations": 8, **fitness.pop("optimizer", {})}
        cfg["fitness"] = fitness
    start = time.perf_counter()
    result = evolve(load_config(cfg))
    recs = [json.loads(line) for line in
            (Path(cfg["run_dir"]) / "evaluations.jsonl").read_text().splitlines()]
    cost = sum(len(t["ids"]) for r in recs if r["kind"] in ("calibration", "candidate")
               for t in r["tasks"].values())
    chosen = next(r for r in result.final if r["chosen"])
    return {"test": statistics.mean(chosen["test"].values()), "role": chosen["role"],
            "cost": cost, "seconds": time.perf_counter() - start}


def markdown(results: dict) -> str:
    """The table for docs/estimators.md."""
    lines = []
    for target, rows in results.items():
        lines += [f"**{target}** (held-out test accuracy of the final answer, %, over "
                  f"{len(next(iter(rows.values()))['tests'])} seeds)", "",
                  "| fitness | mean | min | baseline returned | fitness cost (items) |",
                  "|---|---|---|---|---|"]
        for name, r in sorted(rows.items(), key=lambda kv: -kv[1]["test_mean"]):
            lines.append(f"| {name} | {r['test_mean']:.1f} | {r['test_min']:.1f} | "
                         f"{r['baseline_returned']} | {r['cost_items']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--targets", default="cross_lingual,multi_task")
    ap.add_argument("--only", default="", help="semicolon-separated variant names (default all)")
    ap.add_argument("--markdown", action="store_true", help="print the table of the results")
    args = ap.parse_args()
    out_path = HERE / "results" / "merge3_table.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    if args.markdown:
        print(markdown(results))
        return
    wanted = [v for v in args.only.split(";") if v]
    with tempfile.TemporaryDirectory() as tmp:
        for target in args.targets.split(","):
            for name, fitness in variants().items():
                if wanted and name not in wanted:
                    continue
                rows = [run(target, name, fitness, seed, Path(tmp)) for seed in range(args.seeds)]
                tests = [100 * r["test"] for r in rows]
                results.setdefault(target, {})[name] = {
                    "test_mean": statistics.mean(tests), "test_min": min(tests),
                    "tests": tests, "baseline_returned": sum(r["role"] != "candidate"
                                                             for r in rows),
                    "cost_items": statistics.mean(r["cost"] for r in rows),
                    "seconds": statistics.mean(r["seconds"] for r in rows)}
                print(target, name, json.dumps(results[target][name]), flush=True)
                out_path.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
