"""The one search loop: the optimizer asks for trials, each becomes a recipe scored on its
items (the fitness subset, or a multi-fidelity budget), the optimizer is told, and the
termination decides when to stop. Items a recipe has already answered are never evaluated
again (multi-fidelity trials of one configuration at several budgets share them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from evomerge.errors import EvomergeError
from evomerge.eval.tasks import Task
from evomerge.fitness.calibration import TaskFitness
from evomerge.optim import Optimizer, Termination, Trial
from evomerge.recipe import MergeRecipe
from evomerge.run.evaluations import EvalJob, EvalRecord, Evaluations
from evomerge.spaces import SearchSpace

# recipe text -> task -> item id -> correct
Known = dict[str, dict[str, dict[str, int]]]


@dataclass
class TaskState:
    name: str
    search: Task
    test: Task
    fitness: TaskFitness | None = None

    def subset_ids(self, budget: int | None = None) -> list[str]:
        """The search items a trial answers: the fitness subset, or its first ``budget``."""
        assert self.fitness is not None
        ids = [self.search.items[i].id for i in self.fitness.subset.items]
        return ids if budget is None else ids[:budget]

    def estimate(self, answers: list[int], budget: int | None) -> float:
        """Estimated accuracy from the answers on ``subset_ids(budget)``: the estimator's on
        the fitness subset, the mean on a budget (multi-fidelity)."""
        assert self.fitness is not None
        y = np.array(answers, dtype=float)
        if budget is not None:
            return float(y.mean())
        return float(self.fitness.estimator.estimate(y)[0])


class Search:
    def __init__(self, space: SearchSpace, tasks: list[TaskState], evals: Evaluations,
                 optimizer: Optimizer, termination: Termination) -> None:
        self.space, self.tasks, self.evals = space, tasks, evals
        self.optimizer, self.termination = optimizer, termination
        self.known: Known = {}
        # the first objective's best estimate, for progress; multi-fidelity: at the highest
        # budget seen (a 4-item budget's 1.000 is not a best)
        self.best_so_far = float("-inf")
        self.best_budget = 0
        evals.on_candidate = self.track_best

    def run(self) -> list[dict[str, Any]]:
        """Ask, score, tell until the termination says stop; returns the history (one row
        per generation, or per trial for multi-fidelity trials)."""
        history: list[dict[str, Any]] = []
        opt, term = self.optimizer, self.termination
        scored = 0
        while not term.done(opt):
            trials = opt.ask()
            if not trials:
                break
            # one progress span for the whole search: the trials it will score in all
            expected = term.trials or (term.generations or 0) * len(trials) or 0
            self.evals.span = (scored, max(expected, scored + len(trials)))
            try:
                values, new_items = self.score(trials)
            finally:
                self.evals.span = None
            scored += len(trials)
            opt.tell(trials, -values)
            term.update(trials, -values, int(sum(new_items)))
            if trials[0].budget is None:
                history.append({"generation": trials[0].generation,
                                "best": float(values[:, 0].max()),
                                "mean": float(values[:, 0].mean()), "items": term.items,
                                "tasks": {ts.name: float(values[:, k].max())
                                          for k, ts in enumerate(self.tasks)}})
                continue
            items = term.items - int(sum(new_items))
            top, best = ((history[-1]["best_budget"], history[-1]["best"]) if history
                         else (0, float("-inf")))
            for t, v, n in zip(trials, values, new_items, strict=True):
                items += n
                top, best = _best_at_top(top, best, int(t.budget or 0), float(v[0]))
                history.append({"generation": t.generation, "best": best, "mean": float(v[0]),
                                "budget": t.budget, "best_budget": top, "items": items})
        return history

    def _message(self, trial: Trial) -> str:
        best = f"best {self.best_so_far:.3f}" if self.best_so_far > float("-inf") else "best -"
        if trial.budget is not None:
            at = f" at {self.best_budget} items" if self.best_budget else ""
            return f"trial {trial.generation + 1} {best}{at}"
        limit = self.termination.generations
        stale = self.termination.stale  # generations since the best estimate last rose
        still = f" (unchanged for {stale} generations)" if stale >= 2 else ""
        return (f"gen {trial.generation + 1}" + (f"/{limit}" if limit else "") + f" {best}"
                + still)

    def score(self, trials: list[Trial]) -> tuple[np.ndarray, list[int]]:
        """Estimated accuracy per trial and task (0, the worst, for a genome the space
        rejects or a merge that fails) and the items each trial evaluated anew. A trial
        whose recipe repeats an earlier one of the batch is scored after it, from its
        answers."""
        values = np.zeros((len(trials), len(self.tasks)))
        new_items = [0] * len(trials)
        pending = list(range(len(trials)))
        while pending:
            jobs, owners, texts, later = [], [], set(), []
            for a in pending:
                trial = trials[a]
                try:
                    recipe = self.space.to_recipe(trial.genome)
                except EvomergeError:
                    continue  # rejected by the space: the worst score
                text = recipe.model_dump_json(exclude_none=True)
                if text in texts:
                    later.append(a)
                    continue
                texts.add(text)
                needed = {ts.name: ts.subset_ids(trial.budget) for ts in self.tasks}
                seen = self.known.get(text, {})
                missing = {t: [i for i in ids if i not in seen.get(t, {})]
                           for t, ids in needed.items()}
                if not any(missing.values()):
                    values[a] = self._estimates(needed, seen, {}, trial.budget)
                    continue
                extra: dict[str, Any] = {"genome": self.space.repair(trial.genome).tolist(),
                                         "generation": trial.generation, "index": trial.index}
                if trial.budget is not None:
                    extra["budget"] = trial.budget
                jobs.append(EvalJob("candidate", recipe, dict(missing), "search", extra))
                owners.append((a, needed, seen, sum(len(v) for v in missing.values())))

            def estimate(j: int, tasks: dict[str, Any], own: list[Any] = owners
                         ) -> dict[str, float]:
                a, needed, seen, _ = own[j]
                est = self._estimates(needed, seen, tasks, trials[a].budget)
                return dict(zip([ts.name for ts in self.tasks], est.tolist(), strict=True))

            recs = self.evals.run_tolerant(jobs, "search", lambda t=trials[0]: self._message(t),
                                           estimate) if jobs else []
            for (a, _, _, n_new), rec in zip(owners, recs, strict=True):
                if rec is not None:
                    self.remember(rec)
                    values[a] = [rec["estimates"][ts.name] for ts in self.tasks]
                    new_items[a] = n_new
            pending = later
        return values, new_items

    def _estimates(self, needed: dict[str, list[str]], seen: dict[str, dict[str, int]],
                   new: dict[str, Any], budget: int | None) -> np.ndarray:
        out = []
        for ts in self.tasks:
            got = dict(seen.get(ts.name, {}))
            if ts.name in new:
                got.update(zip(new[ts.name]["ids"], new[ts.name]["correct"], strict=True))
            out.append(ts.estimate([got[i] for i in needed[ts.name]], budget))
        return np.array(out)

    def track_best(self, rec: EvalRecord) -> None:
        """The best estimate the progress line shows, updated as each candidate completes."""
        self.best_budget, self.best_so_far = _best_at_top(
            self.best_budget, self.best_so_far, int(rec.get("budget", 0)),
            rec["estimates"][self.tasks[0].name])

    def remember(self, rec: EvalRecord) -> None:
        self.track_best(rec)  # records answered from the store (resume) too
        text = recipe_text(rec["recipe"])
        for t, res in rec["tasks"].items():
            self.known.setdefault(text, {}).setdefault(t, {}).update(
                zip(res["ids"], res["correct"], strict=True))


def _best_at_top(top: int, best: float, budget: int, value: float) -> tuple[int, float]:
    """(budget, best) after one more score: the best at the highest budget seen so far
    (a higher budget starts over; a lower one does not count)."""
    if budget > top:
        return budget, value
    if budget == top:
        return top, max(best, value)
    return top, best


def recipe_text(recipe: dict[str, Any]) -> str:
    """One text per recipe, however its record spelled it (defaults, key order): the
    identity under which answers are shared and candidates counted once."""
    return MergeRecipe.model_validate(recipe).model_dump_json(exclude_none=True)
