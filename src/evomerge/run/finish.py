"""The end of a search: choose the final merge honestly and report it.

Estimates on a few items carry noise, and the candidate with the highest estimate is the one
most likely to be overestimated (winner's curse). So the final step re-scores the ``top_k``
candidates by estimate (and the Pareto set for several tasks) on the whole search split (the
validation items), together with the input models and the hand-set baselines, and picks by
validation. Nothing worse on validation than the best baseline is ever returned: when no
candidate beats it, the run says so and returns the baseline. The chosen merge, the other
contenders and the baselines are then tested on the held-out split.

Every score comes with its item count and a 95 % interval, and the answer is compared with
the best input model and the best hand-set baseline item by item (stats.py): a gain within
noise, or one that reverses on the test items, is said in plain words. The rule that picks
the answer stays "best on validation": preferring a simpler recipe within noise would need
a ranking of simplicity across methods and spaces that no one agrees on, and the paired
comparison already tells the user when the difference is not real.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evomerge.errors import EvomergeError
from evomerge.recipe import MergeRecipe
from evomerge.run.baselines import hand_set_recipes, input_recipes
from evomerge.run.evaluations import EvalJob, EvalRecord, Evaluations
from evomerge.run.search import TaskState, recipe_text
from evomerge.stats import paired, wilson

Correct = dict[str, dict[str, int]]  # task -> item id -> 0/1


@dataclass
class EvolveResult:
    run_dir: Path
    best_recipe: MergeRecipe
    best_estimate: dict[str, float]  # the chosen candidate's estimates ({} for a baseline)
    test: dict[str, dict[str, float]]  # label -> task -> held-out accuracy ("best": chosen)
    pareto: list[dict[str, Any]] = field(default_factory=list)
    evaluations: int = 0
    new_evaluations: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the user should know about the run
    # every contender of the final step: label, role (input / baseline / candidate), recipe,
    # estimates, validation and test accuracy per task; "chosen" marks the answer
    final: list[dict[str, Any]] = field(default_factory=list)
    chosen: str = "best"  # the label of the final answer among ``final``
    # the answer against the best input and the best baseline, item by item (stats.Paired)
    comparisons: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Contender:
    label: str
    role: str  # input | baseline | candidate
    recipe: MergeRecipe
    estimates: dict[str, float] | None = None
    index: int | None = None  # candidates: position among the ranked candidate records
    validation: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    validation_items: Correct = field(default_factory=dict)
    test_items: Correct = field(default_factory=dict)

    def row(self, chosen: bool) -> dict[str, Any]:
        """The contender as a row of result.json's ``final``: scores with item counts and
        95 % intervals per task."""
        def noise(items: Correct) -> dict[str, Any]:
            return {t: {"n": len(v), "right": sum(v.values()),
                        "interval": list(wilson(sum(v.values()), len(v)))}
                    for t, v in items.items()}

        return {"label": self.label, "role": self.role, "chosen": chosen,
                "estimates": self.estimates, "validation": self.validation, "test": self.test,
                "validation_noise": noise(self.validation_items),
                "test_noise": noise(self.test_items),
                "recipe": self.recipe.model_dump(mode="json", exclude_none=True)}

    def score(self) -> float:
        """What the final choice maximises: mean validation accuracy over the tasks."""
        return float(np.mean(list(self.validation.values())))


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the non-dominated rows of ``points`` (maximisation), by
    pymoo's non-dominated sorting."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    front = NonDominatedSorting().do(-np.asarray(points, dtype=float),
                                     only_non_dominated_front=True)
    return np.sort(np.asarray(front, dtype=int))


def _accuracies(rec: EvalRecord) -> dict[str, float]:
    return {t: r["accuracy"] for t, r in rec["tasks"].items()}


def _correct(rec: EvalRecord) -> Correct:
    return {t: dict(zip(r["ids"], r["correct"], strict=True)) for t, r in rec["tasks"].items()}


def bounded_front(points: np.ndarray, front: np.ndarray, cap: int) -> np.ndarray:
    """The Pareto set as the final step re-scores it: candidates with identical score
    vectors count once (the first asked), and at most ``cap`` of them: each objective's best,
    then the most spread out (pymoo's crowding distance). With several tasks scored on a
    few items, ties are the rule, and a hundred tied candidates re-validated cost as long as
    the search itself."""
    seen: dict[tuple[float, ...], int] = {}
    for i in front.tolist():
        seen.setdefault(tuple(np.round(points[i], 12)), i)
    unique = np.array(sorted(seen.values()), dtype=int)
    if len(unique) <= cap:
        return unique
    from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance

    keep: list[int] = []
    for k in range(points.shape[1]):
        best = int(unique[np.argmax(points[unique, k])])
        if best not in keep and len(keep) < cap:
            keep.append(best)
    crowd = calc_crowding_distance(-points[unique])
    for j in np.argsort(-crowd, kind="stable"):
        if len(keep) >= cap:
            break
        if int(unique[j]) not in keep:
            keep.append(int(unique[j]))
    return np.array(sorted(keep), dtype=int)


def candidate_order(records: list[Any]) -> list[Any]:
    """The candidates of a run in the order the optimizer asked for them (whatever order the
    workers finished in), at the highest budget seen for multi-fidelity runs: position ``i``
    is "candidate i" in reports, result.json and ``evomerge export``."""
    cands = sorted((r for r in records if r["kind"] == "candidate"),
                   key=lambda r: (r["generation"], r.get("index", 0)))
    if any("budget" in r for r in cands):  # multi-fidelity: rank at the highest budget seen
        top = max(r.get("budget", 0) for r in cands)
        cands = [r for r in cands if r.get("budget", 0) == top]
    return cands


def evaluation_notes(records: Iterable[dict[str, Any]]) -> list[str]:
    """What the evaluators adapted during the run (a batch size lowered after running out of
    device memory), once per worker, with the batch size to set to start there."""
    out: list[str] = []
    kept: list[int] = []  # the batch size each evaluator went on with
    for rec in records:
        for note in rec.get("notes", ()):
            text = f"worker {rec.get('worker', 0)}: {note}"
            if text not in out:
                out.append(text)
        if rec.get("notes"):
            kept.append(rec["batch_size"])
    if kept:
        out.append(f"set batch_size: {min(kept)} (or smaller) to skip the retries next time")
    return out


def _ranked_candidates(evals: Evaluations) -> list[EvalRecord]:
    cands = candidate_order(evals.store.of_kind("candidate"))
    if not cands:
        why = evals.failures[0] if evals.failures else "the space rejected every genome"
        raise EvomergeError(f"no candidate could be merged and evaluated ({len(evals.failures)}"
                            f" failed); the first failure: {why}")
    return cands


def _full_search(evals: Evaluations, contenders: list[Contender], cands: list[EvalRecord],
                 sizes: dict[str, int]) -> None:
    """Each contender's accuracy on the whole search split: from its calibration record when
    it has one (the input models usually do), or its candidate record when the fitness
    already covered the whole split, else a validation evaluation. A hand-set
    baseline the models cannot take (e.g. SLERP across shapes) is dropped; any other failure
    (an item beyond the context, say) is the user's to see."""
    for tolerant in (False, True):
        group = [c for c in contenders if (c.role == "baseline") == tolerant]
        jobs, owners = [], []
        for c in group:
            key, _ = EvalJob("calibration", c.recipe, {}).key()
            rec = evals.store.get(key)
            own = cands[c.index] if c.index is not None else None
            if rec is None and own is not None and all(
                    len(set(own["tasks"][t]["ids"])) == n for t, n in sizes.items()):
                rec = own
            if rec is not None:
                c.validation, c.validation_items = _accuracies(rec), _correct(rec)
            else:
                jobs.append(EvalJob("validation", c.recipe, {}))
                owners.append(c)
        recs: list[EvalRecord | None] = (
            evals.run_tolerant(jobs, "validation", lambda: "whole search split",
                               lambda *_: {}) if tolerant
            else list(evals.run(jobs, "validation", lambda: "whole search split")))
        for c, rec in zip(owners, recs, strict=True):
            if rec is not None:
                c.validation, c.validation_items = _accuracies(rec), _correct(rec)
    contenders[:] = [c for c in contenders if c.validation]


def finish(run_dir: Path, cfg: Any, tasks: list[TaskState], evals: Evaluations,
           history: list[dict[str, Any]], notes: list[str]) -> EvolveResult:
    names = [ts.name for ts in tasks]
    cands = _ranked_candidates(evals)
    est = np.array([[rec["estimates"][n] for n in names] for rec in cands])
    order = np.argsort(-est.mean(axis=1), kind="stable")
    pareto_idx = (bounded_front(est, pareto_front(est), cfg.final.pareto_max)
                  if len(names) > 1 else np.array([order[0]]))
    picked: list[int] = []
    texts: set[str] = set()  # a recipe asked twice is one contender
    for i in [*order.tolist(), *pareto_idx.tolist()]:
        text = recipe_text(cands[i]["recipe"])
        if text not in texts and (len(picked) < cfg.final.top_k or i in pareto_idx):
            texts.add(text)
            picked.append(i)
    contenders = [Contender(label, "input", r) for label, r in
                  input_recipes(cfg.base_model, cfg.models).items()]
    if cfg.final.baselines:
        contenders += [Contender(label, "baseline", r) for label, r in
                       hand_set_recipes(cfg.base_model, cfg.models).items()]
    contenders += [Contender(f"candidate {i}", "candidate",
                             MergeRecipe.model_validate(cands[i]["recipe"]), cands[i]["estimates"],
                             index=i) for i in picked]
    _full_search(evals, contenders, cands, {ts.name: len(ts.search.items) for ts in tasks})
    notes = list(notes) + evaluation_notes(evals.store.records.values())
    chosen = _choose(contenders, notes)
    # held-out test: the inputs, the baselines, the chosen one and the best others
    ranked = sorted((c for c in contenders if c.role == "candidate"), key=lambda c: -c.score())
    tested = [c for c in contenders if c.role != "candidate"] + [
        c for k, c in enumerate(ranked) if c is chosen or k < cfg.test_top_k
        or c.index in pareto_idx]
    recs = evals.run([EvalJob("test", c.recipe, {}, "test") for c in tested], "test")
    for c, rec in zip(tested, recs, strict=True):
        c.test, c.test_items = _accuracies(rec), _correct(rec)
    comparisons = compare_answer(chosen, contenders, notes)
    # "best" is the answer; a chosen baseline keeps its own row too
    test = {"best": chosen.test, **{c.label: c.test for c in tested
                                    if c is not chosen or c.role != "candidate"}}
    points = [(c.estimates, c.test) for c in tested if c.estimates is not None]
    pareto = [{"recipe": cands[i]["recipe"], "estimates": cands[i]["estimates"]}
              for i in pareto_idx]
    # every candidate was merged through the run's vocabulary; the answer says so, so best/
    # and the recipe a user copies from the result get the same rows
    answer = chosen.recipe if cfg.tokenizer_source is None else chosen.recipe.model_copy(
        update={"tokenizer_source": cfg.tokenizer_source})
    result = EvolveResult(
        run_dir=run_dir, best_recipe=answer, best_estimate=chosen.estimates or {},
        test=test, pareto=pareto, evaluations=len(evals.store.records),
        new_evaluations=evals.new, history=history, notes=notes,
        final=[c.row(c is chosen) for c in contenders], chosen=chosen.label,
        comparisons=comparisons)
    from evomerge.run.report import write_report

    write_report(result, names, est,
                 [([p[0][n] for n in names], [p[1][n] for n in names]) for p in points if p[1]])
    best_dir = run_dir / "best"
    if cfg.write_best and _stored_recipe(best_dir) != answer:  # new, or an older best
        from evomerge.merge.disk import merge_to_disk

        # stored in the precision it was searched and tested in, so the checkpoint scores
        # what the report says (rounding to the base's float16 moved answers)
        merge_to_disk(answer, best_dir, seed=cfg.seed, dtype=cfg.dtype,
                      out_dtype=cfg.dtype, force=True, statistics_dir=run_dir / "statistics")
    return result


def compare_answer(chosen: Contender, contenders: list[Contender], notes: list[str]
                   ) -> list[dict[str, Any]]:
    """The answer against the best input model and the best hand-set baseline (by
    validation; the answer itself excluded), on the same validation and test items. Each
    test comparison is also a note: a plain sentence that says whether the gain is real."""
    out: list[dict[str, Any]] = []
    for role in ("input", "baseline"):
        others = [c for c in contenders if c.role == role and c is not chosen]
        if not others:
            continue
        other = max(others, key=Contender.score)
        gains = {}
        for split in ("validation", "test"):
            mine, theirs = getattr(chosen, f"{split}_items"), getattr(other, f"{split}_items")
            if not mine or not theirs:
                continue
            cmp = paired(mine, theirs, other.label)
            gains[split] = cmp.gain
            out.append({"role": role, "split": split, **cmp.as_dict()})
            if split == "test":
                reverses = gains.get("validation", 0) > 0 > cmp.gain
                notes.append(cmp.sentence("held-out test") + (
                    "; the gain seen on the validation items reverses on the held-out items"
                    if reverses else ""))
    return out


def _choose(contenders: list[Contender], notes: list[str]) -> Contender:
    """The candidate best on validation, unless no candidate beats the best baseline (input
    models included): then that baseline, said plainly."""
    cands = [c for c in contenders if c.role == "candidate"]
    others = [c for c in contenders if c.role != "candidate"]
    best_c = max(cands, key=Contender.score)  # stable: the higher estimate wins a tie
    if not others:
        return best_c
    best_b = max(others, key=Contender.score)
    if best_c.score() > best_b.score():
        return best_c
    notes.append(f"no evolved candidate beat {best_b.role} {best_b.label!r} on the validation "
                 f"items (best candidate {100 * best_c.score():.1f} %, {best_b.label} "
                 f"{100 * best_b.score():.1f} %): the result is {best_b.label}")
    return best_b


def _stored_recipe(model_dir: Path) -> MergeRecipe | None:
    """The recipe a merged checkpoint was written from (None when there is none)."""
    from evomerge.merge.disk import RECIPE_FILE
    from evomerge.recipe import load_recipe

    try:
        return load_recipe(model_dir / RECIPE_FILE)
    except EvomergeError:
        return None
