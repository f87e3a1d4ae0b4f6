"""Estimator accuracy on a real population of merged models from the demo zoo.

    python benchmarks/estimators.py [--population 64] [--calibration 0 8 24] [--seeds 20]

The benchmark is the held-out test split of arithmetic asked in Italian (add_it, 241 items).
A calibration population (the base, the three experts and `--calibration` random merges) is
evaluated on every item and fitted with a 2-dimensional IRT model; endpoint abilities come
from the base and experts. A separate population of merges spread over the recipe space
(task arithmetic, linear and TIES over 2-3 experts, random weights and densities) is
evaluated on every item too: that is the truth. For n in {10, 20, 50, 100} and 20 seeds, each
estimator sees n random items per model; mean absolute error against the true accuracy and
Spearman correlation are reported. Results: benchmarks/results/estimators.json and a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def random_recipe(rng: np.random.Generator, zoo: Path) -> dict:
    experts = ["math_en", "lang_it", "compare_en"]
    k = int(rng.integers(2, 4))
    chosen = list(rng.choice(experts, size=k, replace=False))
    method = str(rng.choice(["task_arithmetic", "linear", "ties"]))
    models = []
    for name in chosen:
        params: dict = {"weight": float(rng.uniform(0.1, 2.0 if method != "linear" else 1.0))}
        if method == "ties":
            params["density"] = float(rng.uniform(0.2, 1.0))
        models.append({"model": str(zoo / name), "parameters": params})
    recipe = {"merge_method": method, "models": models}
    if method != "linear":
        recipe["base_model"] = str(zoo / "base")
    if method == "ties":
        recipe["parameters"] = {"normalize": False}
    return recipe


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from evomerge.eval.evaluator import Evaluator
    from evomerge.fitness import fit_ability, fit_irt, irt_anchors, make_estimator, random_subset
    from evomerge.io.checkpoint import Checkpoint
    from evomerge.merge.live import LiveMerger
    from evomerge.recipe import load_recipe
    from evomerge.zoo.data import zoo_task
    from evomerge.zoo.manifest import ZOO_DIR

    hf_logging.disable_progress_bar()
    ap = argparse.ArgumentParser()
    ap.add_argument("--population", type=int, default=64)
    ap.add_argument("--calibration", type=int, nargs="+", default=[0, 8, 24])
    ap.add_argument("--irt-kind", default="mirt")
    ap.add_argument("--irt-dims", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--task", default="add_it")
    ap.add_argument("--zoo", type=Path, default=ZOO_DIR)
    args = ap.parse_args()
    zoo = args.zoo
    task = zoo_task(args.task, "test")
    names = ["base", "math_en", "lang_it", "compare_en"]
    sources = {str(zoo / n): Checkpoint(zoo / n) for n in names}
    model = AutoModelForCausalLM.from_pretrained(zoo / "base", dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(zoo / "base")
    merger = LiveMerger(model, sources)
    ev = Evaluator(model, tok, batch_size=256)

    def responses(recipe: dict) -> np.ndarray:
        merger.apply(load_recipe(recipe))
        return ev(task).correct.astype(float)

    start = time.perf_counter()
    endpoints = [responses({"merge_method": "passthrough", "models": [{"model": str(zoo / n)}]})
                 for n in names]
    rng = np.random.default_rng(0)
    calib_all = [responses(random_recipe(rng, zoo)) for _ in range(max(args.calibration))]
    population = np.array([responses(random_recipe(rng, zoo)) for _ in range(args.population)])
    eval_seconds = time.perf_counter() - start
    truth = population.mean(axis=1)
    n_total = len(task.items)
    print(f"{len(population)} merges, true accuracy {truth.min():.2f}-{truth.max():.2f} "
          f"(mean {truth.mean():.2f}); all evaluations {eval_seconds:.0f} s", flush=True)
    estimators = {"mean": {}, "pirt": {}, "gpirt": {"lam": "auto"}, "mpirt": {},
                  "gmpirt": {"delta": 0.5}, "gmpirt_auto": {"delta": "auto"}}
    results: dict = {"population": len(population), "n_total": n_total, "task": args.task,
                     "truth": truth.tolist(), "runs": []}
    for k in args.calibration:
        full = np.array(endpoints + calib_all[:k])
        irt, _ = fit_irt(full, kind=args.irt_kind, dims=args.irt_dims, seed=0)
        thetas = fit_ability(irt, np.array(endpoints), np.arange(n_total))
        for extraction in ("random", "irt_anchors"):
            for n in (10, 20, 50, 100):
                errs: dict[str, list[float]] = {e: [] for e in estimators}
                rhos: dict[str, list[float]] = {e: [] for e in estimators}
                for seed in range(args.seeds):
                    subset = (random_subset(n_total, n, seed) if extraction == "random"
                              else irt_anchors(irt, n, seed))
                    y = population[:, subset.items]
                    for label, opts in estimators.items():
                        est = make_estimator(label.removesuffix("_auto"), subset, irt=irt,
                                             endpoint_thetas=thetas, calibration=full,
                                             **opts).estimate(y)
                        errs[label].append(float(np.mean(np.abs(est - truth))))
                        rhos[label].append(spearman(est, truth))
                row = {"calibration_models": len(full),
                       "calibration_item_evaluations": len(full) * n_total,
                       "extraction": extraction, "n": n,
                       "mae": {e: float(np.mean(v)) for e, v in errs.items()},
                       "mae_std": {e: float(np.std(v)) for e, v in errs.items()},
                       "spearman": {e: float(np.mean(v)) for e, v in rhos.items()}}
                results["runs"].append(row)
                print(f"calib {len(full):2d} {extraction:11s} n={n:3d} " + "  ".join(
                    f"{e} {row['mae'][e] * 100:.1f}/{row['spearman'][e]:.2f}"
                    for e in estimators), flush=True)
    (HERE / "results").mkdir(exist_ok=True)
    suffix = f"{args.irt_kind}{args.irt_dims if args.irt_kind == 'mirt' else ''}"
    (HERE / "results" / f"estimators_{suffix}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
