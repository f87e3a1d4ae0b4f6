"""The end of a search: pick the best candidate, test it (with the input models and the
Pareto set) on the held-out split, write the report and the best checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evomerge.errors import EvomergeError
from evomerge.recipe import MergeRecipe
from evomerge.run.evaluations import EvalJob, Evaluations
from evomerge.run.search import TaskState


@dataclass
class EvolveResult:
    run_dir: Path
    best_recipe: MergeRecipe
    best_estimate: dict[str, float]
    test: dict[str, dict[str, float]]  # label -> task -> held-out accuracy
    pareto: list[dict[str, Any]] = field(default_factory=list)
    evaluations: int = 0
    new_evaluations: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the user should know about the run


def model_recipe(model: str) -> MergeRecipe:
    """The recipe that reproduces one input model unchanged (an endpoint)."""
    return MergeRecipe.model_validate({"merge_method": "passthrough",
                                       "models": [{"model": model}]})


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the non-dominated rows of ``points`` (maximisation), by
    pymoo's non-dominated sorting."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    front = NonDominatedSorting().do(-np.asarray(points, dtype=float),
                                     only_non_dominated_front=True)
    return np.sort(np.asarray(front, dtype=int))


def finish(run_dir: Path, cfg: Any, tasks: list[TaskState], evals: Evaluations,
           history: list[dict[str, Any]], notes: list[str]) -> EvolveResult:
    store = evals.store
    # in the order the optimizer asked for them, whatever order the workers finished in
    cands = sorted(store.of_kind("candidate"), key=lambda r: (r["generation"], r.get("index", 0)))
    if not cands:
        why = evals.failures[0] if evals.failures else "the space rejected every genome"
        raise EvomergeError(f"no candidate could be merged and evaluated ({len(evals.failures)}"
                            f" failed); the first failure: {why}")
    if any("budget" in r for r in cands):  # multi-fidelity: rank at the highest budget seen
        top = max(r.get("budget", 0) for r in cands)
        cands = [r for r in cands if r.get("budget", 0) == top]
    names = [ts.name for ts in tasks]
    est = np.array([[rec["estimates"][n] for n in names] for rec in cands])
    order = np.argsort(-est[:, 0], kind="stable")
    best = cands[int(order[0])]
    best_recipe = MergeRecipe.model_validate(best["recipe"])
    # held-out test: endpoints, the best candidates (and the Pareto set)
    to_test = {"base": model_recipe(cfg.base_model)}
    to_test.update({Path(m).name: model_recipe(m) for m in cfg.models})
    pareto_idx = pareto_front(est) if len(names) > 1 else np.array([order[0]])
    picked = list(dict.fromkeys([*order[: cfg.test_top_k].tolist(), *pareto_idx.tolist()]))
    candidate_label = {i: "best" if rank == 0 else f"candidate {i}"
                       for rank, i in enumerate(picked)}
    to_test.update({label: MergeRecipe.model_validate(cands[i]["recipe"])
                    for i, label in candidate_label.items()})
    recs = evals.run([EvalJob("test", r, {}, "test") for r in to_test.values()], "test")
    test = {label: {n: rec["tasks"][n]["accuracy"] for n in names}
            for label, rec in zip(to_test, recs, strict=True)}
    test_points = [(est[i].tolist(), [test[label][n] for n in names])
                   for i, label in candidate_label.items()]
    pareto = [{"recipe": cands[i]["recipe"], "estimates": cands[i]["estimates"]}
              for i in pareto_idx]
    result = EvolveResult(run_dir=run_dir, best_recipe=best_recipe,
                          best_estimate=best["estimates"], test=test, pareto=pareto,
                          evaluations=len(store.records), new_evaluations=evals.new,
                          history=history, notes=list(notes))
    from evomerge.run.report import write_report

    write_report(result, names, est, test_points)
    best_dir = run_dir / "best"
    if cfg.write_best and _stored_recipe(best_dir) != best_recipe:  # new, or an older best
        from evomerge.merge.disk import merge_to_disk

        # stored in the precision it was searched and tested in, so the checkpoint scores
        # what the report says (rounding to the base's float16 moved answers)
        merge_to_disk(best_recipe, best_dir, seed=cfg.seed, dtype=cfg.dtype,
                      out_dtype=cfg.dtype, force=True)
    return result


def _stored_recipe(model_dir: Path) -> MergeRecipe | None:
    """The recipe a merged checkpoint was written from (None when there is none)."""
    from evomerge.merge.disk import RECIPE_FILE
    from evomerge.recipe import load_recipe

    try:
        return load_recipe(model_dir / RECIPE_FILE)
    except EvomergeError:
        return None
