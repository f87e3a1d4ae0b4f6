"""Richer gradient-free searches on the demo zoo (issue 14 point 7): layer-wise task-arithmetic
weights (GA, CMA-ES) and TIES weights + densities, each with fitness = accuracy on the whole
240-item search split, against the demo's per-model weights; the final choice of
docs/search.md; held-out test accuracy of the answer over seeds 0-4.

    OMP_NUM_THREADS=1 python benchmarks/richer_search.py      # about 10 minutes

Results to benchmarks/results/richer_search.json (docs/search.md, "A richer search").
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FULL = {"subset_size": 240, "estimator": "mean", "calibration_merges": 0}
GA = {"name": "ga", "pop_size": 16, "generations": 8}
VARIANTS = {
    "GA, per-model weights (the demo)": {"space": {"type": "per_model", "weight": [0, 2]},
                                         "optimizer": GA},
    "GA, layer-wise weights": {"space": {"type": "layerwise", "weight": [0, 2]},
                               "optimizer": GA},
    "CMA-ES, layer-wise weights": {"space": {"type": "layerwise", "weight": [0, 2]},
                                   "optimizer": {**GA, "name": "cmaes"}},
    "GA, TIES weights and densities": {
        "merge_method": "ties", "optimizer": GA,
        "space": {"type": "per_model", "weight": [0, 2], "parameters": {"normalize": False}}},
}


def main() -> None:
    from evomerge.config import load_config
    from evomerge.run.loop import evolve
    from evomerge.zoo.manifest import ZOO_DIR

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, over in VARIANTS.items():
            tests, items = [], []
            for seed in range(5):
                run_dir = Path(tmp) / f"{len(out)}-{seed}"
                cfg = {"base_model": str(ZOO_DIR / "base"),
                       "models": [str(ZOO_DIR / "math_en"), str(ZOO_DIR / "lang_it")],
                       "merge_method": "task_arithmetic",
                       "tasks": [{"name": "add_it", "zoo": "add_it"}], "fitness": FULL,
                       "seed": seed, "write_best": False, "run_dir": str(run_dir), **over}
                result = evolve(load_config(cfg))
                tests.append(100 * result.test["best"]["add_it"])
                recs = [json.loads(line) for line in
                        (run_dir / "evaluations.jsonl").read_text().splitlines()]
                items.append(sum(len(t["ids"]) for r in recs if r["kind"] == "candidate"
                                 for t in r["tasks"].values()))
            out[name] = {"tests": tests, "mean": statistics.mean(tests), "min": min(tests),
                         "max": max(tests), "items": statistics.mean(items)}
            print(name, json.dumps(out[name]), flush=True)
    (HERE / "results" / "richer_search.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
