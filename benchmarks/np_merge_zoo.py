"""NP Merge of the demo zoo's experts vs the evolved merge, at equal data.

    python benchmarks/np_merge_zoo.py [--seeds 3]

Target: arithmetic asked in Italian (`add_it`), held-out test split (241 items). The
evolved merge is `evomerge demo`'s search (task-arithmetic weights of math_en and lang_it,
GA 16 x 8, gmp-IRT on 20 anchor items, calibrated on the search split's 241 items): it uses
the labels of the search split. NP Merge (pairwise sigmoid interpolation of math_en and
lang_it, per parameter, 100 Adam steps, lr 0.05, batch 32) learns from the same search split
(241 items), or only from the 20 items of the demo's subset. Results to
benchmarks/results/np_merge_zoo.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    import torch
    import yaml

    from evomerge.config import load_np_merge_config
    from evomerge.npmerge.job import np_merge
    from evomerge.run.demo import demo_config
    from evomerge.run.loop import evolve
    from evomerge.zoo.data import task_items
    from evomerge.zoo.manifest import ZOO_DIR

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        evolved = evolve(demo_config(Path(tmp) / "demo"))
        out["endpoints"] = {k: 100 * v["add_it"] for k, v in evolved.test.items()
                            if k in ("base", "math_en", "lang_it")}
        out["evolved (demo)"] = 100 * evolved.test["best"]["add_it"]
        subset = yaml.safe_load((Path(tmp) / "demo" / "subsets.yaml").read_text())
        search = task_items("add_it", "search")
        ids = [search[i].id for i in subset["add_it"]["items"]]
        print(f"evolved merge: {out['evolved (demo)']:.1f} %", flush=True)
        variants = [("NP Merge, 241 search items", None, "pairwise"),
                    ("NP Merge, the 20 subset items", ids, "pairwise"),
                    ("NP Merge task vectors, 241 search items", None, "task_vectors"),
                    ("NP Merge task vectors, the 20 subset items", ids, "task_vectors")]
        runs: dict[str, list[float]] = {label: [] for label, _, _ in variants}
        for seed in range(args.seeds):
            for j, (label, limit_ids, mode) in enumerate(variants):
                data: dict[str, object] = {"zoo": "add_it", "split": "search",
                                           "ids": limit_ids}
                cfg = load_np_merge_config({
                    "models": [str(ZOO_DIR / "math_en"), str(ZOO_DIR / "lang_it")],
                    "base_model": str(ZOO_DIR / "base"), "mode": mode,
                    "data": data, "test": {"zoo": "add_it", "split": "test"},
                    "steps": 100, "lr": 0.05, "batch_size": 32, "seed": seed,
                    "output": str(Path(tmp) / f"np-{seed}-{j}")})
                result = np_merge(cfg)
                runs[label].append(100 * result.test["np-merge"])
                print(f"{label}, seed {seed}: {runs[label][-1]:.1f} %", flush=True)
    for label, accs in runs.items():
        out[label] = {"mean": statistics.mean(accs), "runs": accs,
                      "std": statistics.stdev(accs) if len(accs) > 1 else 0.0}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "np_merge_zoo.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
