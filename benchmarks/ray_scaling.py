"""Candidates per minute with the local backend and with 1 or 2 Ray workers, and the
per-candidate dispatch overhead of the ray backend.

    python benchmarks/ray_scaling.py [--generations 4] [--pop 16] [--items 120]

The search is the demo's (task arithmetic of the zoo's math and Italian experts, GA) with the
plain mean over ``--items`` search items as fitness (no calibration, so the time is all
candidate evaluations). Each setting runs in a fresh run directory; the search phase's wall
time is taken from the first to the last candidate. Dispatch overhead = wall time per
candidate with one worker minus the worker's own merge + evaluation time. Results to
benchmarks/results/ray_scaling.json.

On a cluster: start Ray there (`ray start --head` on one machine, `ray start
--address=HEAD:6379` on the others, the models on a path every machine can read), and set
``backend: {name: ray, address: auto, workers: <number of GPUs>, gpus_per_worker: 1,
cpus_per_worker: 4}`` with ``device: cuda`` in the evolve config; run this script there with
``--address auto --gpus-per-worker 1`` to get the same table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(setting: dict, args: argparse.Namespace, tmp: Path) -> dict:
    from evomerge.config import load_config
    from evomerge.run.loop import evolve
    from evomerge.zoo.manifest import ZOO_DIR

    stamps: list[float] = []

    def progress(phase: str, done: int, total: int, msg: str) -> None:
        if phase == "search":
            stamps.append(time.perf_counter())

    run_dir = tmp / setting["label"].replace(" ", "_")
    cfg = load_config({
        "base_model": str(ZOO_DIR / "base"),
        "models": [str(ZOO_DIR / "math_en"), str(ZOO_DIR / "lang_it")],
        "space": {"type": "per_model", "weight": [0, 2]},
        "tasks": [{"name": "add_it", "zoo": "add_it"}],
        "fitness": {"subset_size": args.items, "estimator": "mean", "calibration_merges": 0},
        "optimizer": {"name": "ga", "pop_size": args.pop, "generations": args.generations},
        "device": args.device, "backend": setting["backend"], "run_dir": str(run_dir),
        "write_best": False, "test_top_k": 1,
    })
    evolve(cfg, progress=progress)
    recs = [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text()
            .splitlines()]
    cands = [r for r in recs if r["kind"] == "candidate"]
    wall = stamps[-1] - stamps[0]
    own = statistics.mean(r["seconds"]["merge"] + r["seconds"]["eval"] for r in cands)
    n = len(cands) - 1  # the first stamp is the first candidate's start
    return {"label": setting["label"], "candidates": len(cands), "wall_s": wall,
            "candidates_per_min": 60 * n / wall, "worker_seconds_per_candidate": own,
            "wall_per_candidate_s": wall / n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--pop", type=int, default=16)
    ap.add_argument("--items", type=int, default=120)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--address", default=None)
    ap.add_argument("--gpus-per-worker", type=float, default=0.0)
    args = ap.parse_args()
    import ray

    settings = [{"label": "local (2 threads)", "backend": {"name": "local"}}]
    for w in (1, 2):
        settings.append({"label": f"ray {w} worker{'s' if w > 1 else ''}",
                         "backend": {"name": "ray", "workers": w, "cpus_per_worker": 1,
                                     "gpus_per_worker": args.gpus_per_worker,
                                     "address": args.address}})
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in settings:
            if s["backend"]["name"] == "ray":
                ray.shutdown()  # a fresh cluster sized for this setting
            results.append(run(s, args, Path(tmp)))
            r = results[-1]
            print(f"{r['label']:20s} {r['candidates_per_min']:6.1f} candidates/min "
                  f"(wall {r['wall_per_candidate_s']:.3f} s per candidate, worker's own "
                  f"{r['worker_seconds_per_candidate']:.3f} s)", flush=True)
    one = next(r for r in results if r["label"] == "ray 1 worker")
    overhead = one["wall_per_candidate_s"] - one["worker_seconds_per_candidate"]
    out = {"settings": results, "dispatch_overhead_s": overhead,
           "speedup_2_vs_1_workers": next(r for r in results if r["label"] == "ray 2 workers")
           ["candidates_per_min"] / one["candidates_per_min"]}
    print(f"dispatch overhead {1000 * overhead:.1f} ms per candidate; 2 vs 1 workers "
          f"{out['speedup_2_vs_1_workers']:.2f}x")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "ray_scaling.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
