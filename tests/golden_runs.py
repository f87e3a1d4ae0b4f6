"""Small searches on the committed zoo whose records must not change when the code is
reorganised (issue 16: "no behaviour change"). ``python tests/golden_runs.py`` rewrites
tests/data/golden_runs.json; tests/test_golden.py compares a fresh run with it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from evomerge.config import load_config
from evomerge.run.loop import evolve
from evomerge.zoo.manifest import ZOO_DIR

GOLDEN = Path(__file__).parent / "data" / "golden_runs.json"
# wall time, which worker, and the key (a hash over recipes that hold absolute model paths):
# not part of the result; paths are written relative to the zoo, so any checkout compares
VOLATILE = ("seconds", "worker", "key")


def configs(run_root: Path) -> dict[str, dict[str, Any]]:
    z = ZOO_DIR
    common = {"base_model": str(z / "base"), "models": [str(z / "math_en"), str(z / "lang_it")],
              "merge_method": "task_arithmetic", "seed": 0, "write_best": False}
    add = [{"name": "add_it", "zoo": "add_it"}]
    two = [{"name": "add_it", "zoo": "add_it"}, {"name": "max_it", "zoo": "max_it"}]
    return {
        "ga_gmpirt_anchors": {**common, "space": {"type": "per_model", "weight": [0, 2]},
                              "tasks": add,
                              "fitness": {"subset_size": 20, "estimator": "gmpirt",
                                          "calibration_merges": 4, "irt_kind": "2pl",
                                          "extraction": "irt_anchors"},
                              "optimizer": {"name": "ga", "pop_size": 6, "generations": 3}},
        "smac_two_tasks": {**common, "space": {"type": "per_model"}, "tasks": two,
                           "optimizer": {"name": "smac", "trials": 8, "min_items": 10,
                                         "max_items": 40}},
        "nsga2_layerwise_mean": {**common, "space": {"type": "layerwise", "grid": 0.25,
                                                     "layer_granularity": 2},
                                 "tasks": two,
                                 "fitness": {"subset_size": 12, "estimator": "mean",
                                             "calibration_merges": 0},
                                 "optimizer": {"name": "nsga2", "pop_size": 4,
                                               "generations": 2}},
        "de_lfs_pirt": {**common, "space": {"type": "lfs", "layer_granularity": 2},
                        "tasks": add,
                        "fitness": {"subset_size": 10, "estimator": "pirt",
                                    "calibration_merges": 2, "irt_kind": "2pl",
                                    "extraction": "stratified", "stratify_by": "digits"},
                        "optimizer": {"name": "de", "pop_size": 4, "generations": 2}},
        "random_dis_weighted": {**common, "space": {"type": "dis"}, "tasks": add,
                                "fitness": {"subset_size": 10, "estimator": "weighted",
                                            "calibration_merges": 0},
                                "optimizer": {"name": "random", "pop_size": 4,
                                              "generations": 2, "item_budget": 60}},
    }


def run_all(run_root: Path) -> dict[str, Any]:
    out = {}
    for name, cfg in configs(run_root).items():
        run_dir = run_root / name
        result = evolve(load_config({**cfg, "run_dir": str(run_dir)}))
        recs = [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text()
                .splitlines()]
        out[name] = {
            "records": [{k: v for k, v in r.items() if k not in VOLATILE} for r in recs],
            "best_recipe": result.best_recipe.model_dump(mode="json", exclude_none=True),
            "test": result.test, "history": result.history,
        }
    return json.loads(json.dumps(out).replace(str(ZOO_DIR), "<zoo>"))


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        data = run_all(Path(tmp))
    GOLDEN.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}: " + ", ".join(f"{k} {len(v['records'])} records"
                                           for k, v in data.items()), file=sys.stderr)
