"""The search loop: genome -> recipe -> weights merged in place into one live model ->
evaluation on the reduced dataset -> estimated accuracy -> optimizer.

Every evaluation goes to the run store as it completes. Resume replays the seeded optimizer
from the start and answers every evaluation already recorded from the store, so a resumed run
repeats no finished evaluation and ends exactly where an uninterrupted run would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from evomerge.config import EvolveConfig
from evomerge.errors import ConfigError, EvomergeError, ModelError
from evomerge.eval.tasks import Task
from evomerge.fitness import (
    Estimator,
    IRTModel,
    Subset,
    correctness_anchors,
    fit_ability,
    fit_irt,
    irt_anchors,
    random_subset,
    stratified_subset,
)
from evomerge.io.checkpoint import Checkpoint
from evomerge.io.naming import num_layers_of
from evomerge.io.outdir import (
    atomic_write_text,
    check_replaceable,
    check_target,
    make_parents,
    write_marker,
)
from evomerge.merge.disk import merge_to_disk, resolve_device
from evomerge.merge.registry import get_method
from evomerge.optim import make_optimizer
from evomerge.recipe import MergeRecipe
from evomerge.run.backends import Backend, make_backend
from evomerge.run.resume import check_resume, write_run_info
from evomerge.run.store import LOCK_FILE, RECORD_FILE, RunLock, RunStore, recipe_key
from evomerge.run.worker import load_task_pair
from evomerge.spaces import DISSpace, LayerwiseSpace, LFSSpace, PerModelSpace, SearchSpace

Progress = Callable[[str, int, int, str], None]  # (phase, done, total, message)


@dataclass
class TaskState:
    name: str
    search: Task
    test: Task
    subset: Subset | None = None
    estimator: Estimator | None = None
    irt: IRTModel | None = None


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


class Runner:
    def __init__(self, config: EvolveConfig, run_dir: Path, progress: Progress | None = None
                 ) -> None:
        self.cfg = config
        self.run_dir = run_dir
        self.progress = progress or (lambda *a: None)
        resolve_device(config.device)  # a CUDA request without CUDA fails here
        get_method(config.merge_method)
        checkpoints = {m: Checkpoint(m) for m in [config.base_model, *config.models]}
        self.tasks = [self._load_task(t) for t in config.tasks]
        self.space = self._space(checkpoints)
        self._probe_merge(checkpoints)
        f = config.fitness
        for ts in self.tasks:
            if f.subset_size > len(ts.search.items):
                raise ConfigError(f"task {ts.name}: subset_size {f.subset_size} exceeds its "
                                  f"{len(ts.search.items)} search items")
        names = {ts.name: ts for ts in self.tasks}
        for task_name, path in f.responses.items():  # read now: a bad file stops before work
            if task_name not in names:
                raise ConfigError(f"fitness.responses names task {task_name!r}, which is not "
                                  f"one of the tasks ({', '.join(names)})")
            load_responses(path, len(names[task_name].search.items))
        if f.extraction == "stratified" and not f.stratify_by:
            raise ConfigError("stratified extraction needs stratify_by (a metadata field)")
        o = config.optimizer
        if o.name == "smac":
            self.fidelity = self._fidelity()
            try:
                import smac  # noqa: F401
            except ImportError:
                raise ConfigError("optimizer smac needs SMAC3: pip install 'evomerge[smac]'"
                                  ) from None
        else:
            make_optimizer(o.name, *self.space.bounds, n_obj=len(self.tasks),
                           pop_size=o.pop_size, n_gen=o.generations,
                           seed=config.seed)  # validates before any work
        self.backend: Backend = make_backend(config)  # reads the models (here or on workers)
        self.store: RunStore  # opened by evolve() once the whole config has been validated
        self.new_evaluations = 0
        self.failures: list[str] = []  # why candidates could not be merged or evaluated
        self.best_so_far = float("-inf")  # first objective's estimate, for the progress line

    # -- setup -----------------------------------------------------------------------------
    def _probe_merge(self, checkpoints: dict[str, Checkpoint]) -> None:
        """Plan the space's midpoint merge on the checkpoints' headers: models that cannot be
        merged at all (a vocabulary or shape mismatch, a missing tensor) stop here, before
        any work, instead of failing every candidate."""
        from evomerge.merge.planner import MergePlan

        xl, xu = self.space.bounds
        try:
            recipe = self.space.to_recipe(self.space.repair((xl + xu) / 2))
            MergePlan.build(recipe, checkpoints, seed=self.cfg.seed)
        except ModelError:
            raise
        except EvomergeError:  # a parameter value this genome happens to reject
            pass

    def _load_task(self, t: Any) -> TaskState:
        search, test = load_task_pair(t)
        return TaskState(t.name, search, test)

    def _fidelity(self) -> tuple[int, int]:
        """(min, max) items per task for multi-fidelity search: 100 to 1000 by default,
        scaled to the smallest task's search split."""
        o = self.cfg.optimizer
        n = min(len(ts.search.items) for ts in self.tasks)
        hi = o.max_items or min(1000, n)
        lo = o.min_items or max(1, round(hi * 100 / 1000))
        if hi > n:
            raise ConfigError(f"max_items {hi} exceeds the {n} search items of the smallest task")
        if not 1 <= lo <= hi:
            raise ConfigError(f"min_items {lo} must lie in [1, max_items {hi}]")
        return lo, hi

    def _space(self, checkpoints: dict[str, Checkpoint]) -> SearchSpace:
        s = self.cfg.space
        kw = dict(weight=s.weight, density=s.density, t=s.t, grid=s.grid,
                  parameters=s.parameters)
        if s.type == "per_model":
            return PerModelSpace(self.cfg.merge_method, self.cfg.models, self.cfg.base_model, **kw)
        base = checkpoints[self.cfg.base_model]
        if s.type == "dis":
            return DISSpace(self.cfg.models, self.cfg.base_model,
                            num_layers_of(base.config, base.names()), repeat=s.repeat,
                            max_depth=s.max_depth, scale=s.scale)
        if s.type == "lfs":
            return LFSSpace(self.cfg.models, self.cfg.base_model,
                            num_layers_of(base.config, base.names()), s.layer_granularity,
                            weight=s.weight, density=s.density)
        return LayerwiseSpace(self.cfg.merge_method, self.cfg.models, self.cfg.base_model,
                              num_layers_of(base.config, base.names()), s.layer_granularity,
                              tuple(s.modules), **kw)

    # -- evaluations -----------------------------------------------------------------------
    def evaluate(self, kind: str, recipe: MergeRecipe, items: dict[str, list[str] | None],
                 split: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Evaluate (or fetch from the store) ``recipe`` on ``items`` per task."""
        return self.evaluate_many([(kind, recipe, items, split, extra)], kind)[0]

    def evaluate_many(self, jobs: list[tuple[str, MergeRecipe, dict[str, list[str] | None],
                                             str, dict[str, Any] | None]],
                      phase: str, message: Callable[[], str] = lambda: "",
                      estimate: Callable[[int, dict[str, Any]], dict[str, float]] | None = None
                      ) -> list[dict[str, Any]]:
        """Records of every job, in job order: recorded ones from the store, the rest run on
        the backend and appended to the store as each completes."""
        keys: list[str] = []
        todo: dict[str, int] = {}  # key -> payload index
        payloads: list[tuple[dict[str, Any], dict[str, list[str] | None], str]] = []
        for kind, recipe, items, split, _ in jobs:
            recipe_json = recipe.model_dump(mode="json", exclude_none=True)
            scope = [kind, split] + [f"{t}:" + ",".join(v or ["all"])
                                     for t, v in sorted(items.items())]
            key = recipe_key(recipe_json, *scope)
            keys.append(key)
            if self.store.get(key) is None and key not in todo:
                todo[key] = len(payloads)
                payloads.append((recipe_json, items, split))
        payload_keys = list(todo)  # payload index -> key
        by_key: dict[str, int] = {}
        for i, k in enumerate(keys):  # a duplicate job shares the first one's record
            by_key.setdefault(k, i)
        done = len(jobs) - len(payloads)

        def on_done(j: int, result: dict[str, Any]) -> None:
            nonlocal done
            key = payload_keys[j]
            kind, _, _, split, extra = jobs[by_key[key]]
            record = {"key": key, "kind": kind, "split": split, "recipe": payloads[j][0],
                      "tasks": result["tasks"], "seconds": result["seconds"],
                      "worker": result["worker"], **(extra or {})}
            if kind == "candidate":
                record["estimates"] = estimate(by_key[key], result["tasks"]) if estimate else {
                    ts.name: float(ts.estimator.estimate(  # type: ignore[union-attr]
                        np.array(result["tasks"][ts.name]["correct"], dtype=float))[0])
                    for ts in self.tasks}
                self.best_so_far = max(self.best_so_far, record["estimates"][self.tasks[0].name])
            self.store.add(record)
            self.new_evaluations += 1
            done += 1
            activity = self.backend.activity()
            self.progress(phase, done, len(jobs), message() + (f" | {activity}"
                                                               if activity else ""))

        self.progress(phase, done, len(jobs), message())
        if payloads:
            self.backend.run(payloads, on_done)
        return [self.store.get(k) for k in keys]  # type: ignore[misc]

    def evaluate_tolerant(self, jobs: list[Any], phase: str, message: Callable[[], str],
                          estimate: Callable[[int, dict[str, Any]], dict[str, float]] | None
                          = None) -> list[dict[str, Any] | None]:
        """``evaluate_many`` for search candidates: a job whose merge or evaluation fails
        with a user-level error (e.g. a linear group whose weights sum to 0) gives None, to
        be scored as the worst, instead of stopping the search."""
        try:
            return list(self.evaluate_many(jobs, phase, message, estimate))
        except EvomergeError:  # find which: one by one (finished ones come from the store)
            out: list[dict[str, Any] | None] = []
            for k, job in enumerate(jobs):
                one = None if estimate is None else (
                    lambda _, tasks, k=k: estimate(k, tasks))  # type: ignore[misc]
                try:
                    out.append(self.evaluate_many([job], phase, message, one)[0])
                except EvomergeError as exc:
                    self.failures.append(str(exc))
                    out.append(None)
            return out

    # -- calibration: IRT on endpoints and random merges -----------------------------------
    def calibrate(self) -> None:
        if self.cfg.optimizer.name == "smac":  # fitness = the mean over a fidelity's items
            self._fidelity_order()
            return
        f = self.cfg.fitness
        rng = np.random.default_rng(self.cfg.seed + 7)
        xl, xu = self.space.bounds
        endpoints = self.space.endpoints()
        genomes = endpoints + [self.space.repair(xl + rng.random(len(xl)) * (xu - xl))
                               for _ in range(f.calibration_merges)]
        recipes = [model_recipe(self.cfg.base_model)] + [self.space.to_recipe(g)
                                                          for g in genomes]
        needs_irt = f.estimator not in ("mean", "weighted") or f.extraction in (
            "irt_anchors", "correctness_anchors")
        records = []
        if needs_irt:
            records = self.evaluate_many([("calibration", r, {}, "search", None)
                                          for r in recipes], "calibration",
                                         lambda: "full search split")
        for ts in self.tasks:
            n_total = len(ts.search.items)
            full = (np.array([rec["tasks"][ts.name]["correct"] for rec in records], dtype=float)
                    if records else None)
            if full is not None and ts.name in f.responses:
                full = np.vstack([full, load_responses(f.responses[ts.name], n_total)])
            if full is not None:
                dims = f.irt_dims if f.irt_kind == "mirt" else 1
                ts.irt, _ = fit_irt(full, kind=f.irt_kind, dims=dims, seed=self.cfg.seed)
            ts.subset = self._extract(ts, full)
            thetas = None
            if f.estimator in ("mpirt", "gmpirt"):
                n_end = 1 + len(endpoints)  # the base, then the endpoint genomes
                thetas = fit_ability(ts.irt, full[:n_end], np.arange(n_total))
            prior = math.inf if f.ability_prior == "none" else f.ability_prior
            ts.estimator = Estimator(f.estimator, ts.subset, irt=ts.irt, endpoint_thetas=thetas,
                                     delta=f.delta, lam=f.delta, calibration=full,
                                     ability_prior=prior)
        self._write_subsets()

    def _fidelity_order(self) -> None:
        """A seeded order of each task's search items; fidelity b = its first b items, so
        budgets are nested and a candidate never sees an item twice."""
        hi = self.fidelity[1]
        for k, ts in enumerate(self.tasks):
            order = np.random.default_rng(self.cfg.seed + 1000 * k).permutation(
                len(ts.search.items))[:hi]
            ts.subset = Subset(items=order, weights=np.full(hi, 1.0 / hi),
                               n_total=len(ts.search.items), method="fidelity_order",
                               seed=self.cfg.seed)
            ts.estimator = Estimator("mean", ts.subset)
        self._write_subsets()

    def write_splits(self) -> None:
        """Each task's search and test item ids (for lm-eval tasks: doc ids), so the split a
        run used can be read and reproduced."""
        atomic_write_text(self.run_dir / "splits.yaml", yaml.safe_dump(
            {ts.name: {"search": ts.search.ids, "test": ts.test.ids} for ts in self.tasks},
            sort_keys=False, default_flow_style=None, width=100))

    def _write_subsets(self) -> None:
        """Each task's reduced dataset (or fidelity order) with its item ids, for the user."""
        atomic_write_text(self.run_dir / "subsets.yaml", yaml.safe_dump(
            {ts.name: {**ts.subset.to_json(),
                       "ids": [ts.search.items[i].id for i in ts.subset.items]}
             for ts in self.tasks if ts.subset is not None}, sort_keys=False))

    def _extract(self, ts: TaskState, full: np.ndarray | None) -> Subset:
        f = self.cfg.fitness
        n, total, seed = f.subset_size, len(ts.search.items), self.cfg.seed
        if f.extraction == "random":
            return random_subset(total, n, seed)
        if f.extraction == "stratified":
            assert f.stratify_by is not None  # checked when the run is set up
            return stratified_subset([it.meta.get(f.stratify_by, "") for it in ts.search.items],
                                     n, seed)
        if f.extraction == "irt_anchors":
            assert ts.irt is not None
            return irt_anchors(ts.irt, n, seed)
        assert full is not None
        return correctness_anchors(full, n, seed)

    # -- candidates ------------------------------------------------------------------------
    def fitness(self, X: np.ndarray, generation: int, message: Callable[[], str] = lambda: ""
                ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Objectives (to minimise) and records of a population; a genome the space rejects
        (e.g. a stack beyond max_depth) gets the worst score and no evaluation."""
        items = {ts.name: [ts.search.items[i].id for i in ts.subset.items]  # type: ignore[union-attr]
                 for ts in self.tasks}
        jobs, slots = [], []
        for i, x in enumerate(X):
            try:
                recipe = self.space.to_recipe(x)
            except EvomergeError:
                continue
            slots.append(i)
            jobs.append(("candidate", recipe, items, "search",
                         {"genome": self.space.repair(x).tolist(), "generation": generation,
                          "index": i}))
        recs = self.evaluate_tolerant(jobs, "search", message)
        F = np.zeros((len(X), len(self.tasks)))  # accuracy 0: the worst
        for i, r in zip(slots, recs, strict=True):
            if r is not None:
                F[i] = [-r["estimates"][ts.name] for ts in self.tasks]
        return F, [r for r in recs if r is not None]

    def search(self) -> list[dict[str, Any]]:
        if self.cfg.optimizer.name == "smac":
            return self.search_multi_fidelity()
        o = self.cfg.optimizer
        xl, xu = self.space.bounds
        initial = np.array(self.space.endpoints()) if o.seed_endpoints else None
        opt = make_optimizer(o.name, xl, xu, n_obj=len(self.tasks), pop_size=o.pop_size,
                             n_gen=o.generations, seed=self.cfg.seed, initial=initial)
        history: list[dict[str, Any]] = []
        gen, seen, items_used = 0, set(), 0
        while not opt.done and (o.item_budget is None or items_used < o.item_budget):
            X = opt.ask()
            F, recs = self.fitness(X, gen, lambda g=gen: f"gen {g + 1}/{o.generations} "
                                                         f"best {self.best_so_far:.3f}")
            opt.tell(F)
            for r in recs:
                if r["key"] not in seen:
                    seen.add(r["key"])
                    items_used += sum(len(t["ids"]) for t in r["tasks"].values())
            est = -F
            history.append({"generation": gen, "best": float(est[:, 0].max()),
                            "mean": float(est[:, 0].mean()), "items": items_used})
            gen += 1
        return history

    def search_multi_fidelity(self) -> list[dict[str, Any]]:
        """SMAC + Hyperband over the space; fidelity = items of each task's search order.
        Items a candidate already answered (at another budget) are reused, never re-run; a
        configuration that cannot be merged gets the worst score."""
        from evomerge.optim.smac import SMACAskTell

        o = self.cfg.optimizer
        lo, hi = self.fidelity
        opt = SMACAskTell(self.space.genes, n_obj=len(self.tasks), min_budget=lo,
                          max_budget=hi, eta=o.eta,
                          n_trials=o.trials or o.pop_size * o.generations,
                          seed=self.cfg.seed,
                          initial=self.space.endpoints() if o.seed_endpoints else None,
                          output_dir=self.run_dir / "smac")
        order = {ts.name: [ts.search.items[i].id for i in ts.subset.items]  # type: ignore[union-attr]
                 for ts in self.tasks}
        # recipe -> task -> id -> correct, built as trials run: on resume the replayed trials
        # rebuild it from the record, so each counts the items it evaluated first as it
        # did before (item_budget and trials end where an undisturbed run ends)
        known: dict[str, dict[str, dict[str, int]]] = {}
        history: list[dict[str, Any]] = []
        trial, items_used = 0, 0
        # as many trials in flight as there are workers (asked together, told in order)
        batch = self.cfg.backend.workers if self.cfg.backend.name == "ray" else 1
        while not opt.done and (o.item_budget is None or items_used < o.item_budget):
            asks = []
            while len(asks) < batch and not opt.done:
                asks.append(opt.ask())
            estimates = self._mf_batch(asks, trial, order, known)
            for (_, budget), est in zip(asks, estimates, strict=True):
                items_used += est.pop("_new_items", 0)  # type: ignore[arg-type]
                opt.tell([-est[ts.name] for ts in self.tasks])
                first = est[self.tasks[0].name]
                history.append({"generation": trial, "best": max([first] + [
                    h["best"] for h in history[-1:]]), "mean": first, "budget": budget,
                    "items": items_used})
                trial += 1
        return history

    def _mf_batch(self, asks: list[tuple[np.ndarray, int]], trial: int,
                  order: dict[str, list[str]], known: dict[str, dict[str, dict[str, int]]]
                  ) -> list[dict[str, float]]:
        """Estimates (mean over each budget's items) of a batch of asked trials, evaluating
        only the items each candidate has not answered yet, in parallel on the backend.
        A trial whose recipe repeats an earlier one of the batch runs after it; a rejected
        or failing configuration scores 0 (the worst)."""
        out: list[dict[str, float] | None] = [None] * len(asks)
        pending = list(range(len(asks)))
        while pending:
            jobs, owners, texts, later = [], [], set(), []
            for a in pending:
                genome, budget = asks[a]
                needed = {t: ids[:budget] for t, ids in order.items()}
                try:
                    recipe = self.space.to_recipe(genome)
                except EvomergeError:
                    out[a] = {t: 0.0 for t in needed}
                    continue
                text = recipe.model_dump_json(exclude_none=True)
                if text in texts:
                    later.append(a)
                    continue
                texts.add(text)
                seen = known.get(text, {})
                missing = {t: [i for i in ids if i not in seen.get(t, {})]
                           for t, ids in needed.items()}
                if not any(missing.values()):
                    out[a] = _mean_over(needed, seen, {})
                    continue
                jobs.append(("candidate", recipe, missing, "search",
                             {"genome": self.space.repair(genome).tolist(),
                              "generation": trial + a, "index": 0, "budget": budget}))
                owners.append((a, needed, seen, sum(len(v) for v in missing.values())))

            def message(n: int = trial) -> str:
                return f"trial {n + 1} best {self.best_so_far:.3f}"

            recs = self.evaluate_tolerant(
                jobs, "search", message,
                estimate=lambda j, tasks, own=owners: _mean_over(own[j][1], own[j][2], tasks))
            for (a, needed, _, n_new), rec in zip(owners, recs, strict=True):
                if rec is None:
                    out[a] = {t: 0.0 for t in needed}
                    continue
                self._remember(known, rec)
                out[a] = {**rec["estimates"], "_new_items": n_new}
            pending = later
        return out  # type: ignore[return-value]

    @staticmethod
    def _remember(known: dict[str, dict[str, dict[str, int]]], rec: dict[str, Any]) -> None:
        text = MergeRecipe.model_validate(rec["recipe"]).model_dump_json(exclude_none=True)
        for t, res in rec["tasks"].items():
            known.setdefault(text, {}).setdefault(t, {}).update(
                zip(res["ids"], res["correct"], strict=True))


def _mean_over(needed: dict[str, list[str]], seen: dict[str, dict[str, int]],
               new: dict[str, Any]) -> dict[str, float]:
    """Mean correctness over each task's ``needed`` items, from earlier answers and new ones."""
    out = {}
    for t, ids in needed.items():
        got = {**seen.get(t, {})}
        if t in new:
            got.update(zip(new[t]["ids"], new[t]["correct"], strict=True))
        out[t] = float(np.mean([got[i] for i in ids]))
    return out


def model_recipe(model: str) -> MergeRecipe:
    """The recipe that reproduces one input model unchanged (an endpoint)."""
    return MergeRecipe.model_validate({"merge_method": "passthrough",
                                       "models": [{"model": model}]})


def load_responses(path: str, n_items: int) -> np.ndarray:
    """A user-supplied response matrix (models x items, 0/1, NaN for missing)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"response matrix {p} does not exist or is not a file")
    try:
        data = (np.load(p, allow_pickle=False) if p.suffix == ".npy"
                else np.loadtxt(p, delimiter=",", ndmin=2))
        data = np.atleast_2d(np.asarray(data, dtype=float))
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"response matrix {p} cannot be read as a 0/1 matrix: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                          ) from None
    if data.ndim != 2:
        raise ConfigError(f"response matrix {p} must be 2-D (models x items)")
    if data.shape[1] != n_items:
        raise ConfigError(f"response matrix {p} has {data.shape[1]} columns, the task has "
                          f"{n_items} search items")
    if np.any((data != 0) & (data != 1) & ~np.isnan(data)):
        raise ConfigError(f"response matrix {p} must hold only 0, 1 or NaN")
    return data


def _pareto(points: np.ndarray) -> np.ndarray:
    """Indices of non-dominated rows (maximisation)."""
    keep = []
    for i, p in enumerate(points):
        dominated = np.any(np.all(points >= p, axis=1) & np.any(points > p, axis=1))
        if not dominated:
            keep.append(i)
    return np.array(keep, dtype=int)


def evolve(config: EvolveConfig, *, resume: bool = False, fresh: bool = False,
           progress: Progress | None = None) -> EvolveResult:
    """Run (or resume) a search; returns the best recipe and its held-out accuracy.

    ``resume`` continues the run in ``config.run_dir`` (refused when the config or the
    inputs changed what its evaluations mean); ``fresh`` discards a run there first (only a
    directory evomerge wrote). Everything is validated before the run directory is touched,
    and the directory is locked for the whole run."""
    run_dir = Path(config.run_dir).resolve()
    if resume and fresh:
        raise ConfigError("give --resume or --fresh, not both")
    inputs = [config.base_model, *config.models]
    check_target(run_dir, inputs=inputs)
    has_run = (run_dir / RECORD_FILE).exists() and (run_dir / RECORD_FILE).stat().st_size > 0
    if resume:
        if not (run_dir / "config.yaml").exists():
            raise ConfigError(f"{run_dir} is not a run directory (no config.yaml)")
        check_resume(run_dir, config)
    elif has_run and not fresh:
        raise ConfigError(f"run directory {run_dir} already holds a run (--resume to continue "
                          "it, --fresh to discard it, or another run_dir)")
    elif run_dir.exists():  # replacing: only what evomerge wrote there
        check_replaceable(run_dir, inputs=inputs, flag="--fresh" if fresh else "run_dir")
    runner = Runner(config, run_dir, progress)  # validates everything; writes nothing
    make_parents(run_dir / RECORD_FILE)  # the run directory and its parents
    lock = RunLock(run_dir)
    try:
        if not resume:
            _clear_run(run_dir)
            write_marker(run_dir, "run")
        # on resume, an allowed extension (checked above) becomes the run's config
        write_run_info(run_dir, config)
        runner.write_splits()
        atomic_write_text(run_dir / "config.yaml",
                          yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        runner.store = RunStore(run_dir)
        try:
            runner.calibrate()
            history = runner.search()
            result = _finish(runner, history)
        finally:
            runner.store.close()
            runner.backend.close()
    finally:
        lock.release()
    return result


def _clear_run(run_dir: Path) -> None:
    """Empty a run directory for a new run, keeping the lock file we hold (the caller checked
    that everything there was written by evomerge)."""
    import shutil

    for entry in run_dir.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _finish(runner: Runner, history: list[dict[str, float]]) -> EvolveResult:
    cfg = runner.cfg
    # in the order the optimizer asked for them, whatever order the workers finished in
    cands = sorted(runner.store.of_kind("candidate"),
                   key=lambda r: (r["generation"], r.get("index", 0)))
    if not cands:
        why = runner.failures[0] if runner.failures else "the space rejected every genome"
        raise EvomergeError(f"no candidate could be merged and evaluated ({len(runner.failures)}"
                            f" failed); the first failure: {why}")
    if any("budget" in r for r in cands):  # multi-fidelity: rank at the highest budget seen
        top = max(r.get("budget", 0) for r in cands)
        cands = [r for r in cands if r.get("budget", 0) == top]
    names = [ts.name for ts in runner.tasks]
    est = np.array([[rec["estimates"][n] for n in names] for rec in cands])
    order = np.argsort(-est[:, 0], kind="stable")
    best = cands[int(order[0])]
    best_recipe = MergeRecipe.model_validate(best["recipe"])
    # held-out test: endpoints, the best candidates (and the Pareto set)
    to_test = {"base": model_recipe(cfg.base_model)}
    to_test.update({Path(m).name: model_recipe(m) for m in cfg.models})
    pareto_idx = _pareto(est) if len(names) > 1 else np.array([order[0]])
    picked = list(dict.fromkeys([*order[: cfg.test_top_k].tolist(), *pareto_idx.tolist()]))
    candidate_label = {i: "best" if rank == 0 else f"candidate {i}"
                       for rank, i in enumerate(picked)}
    to_test.update({label: MergeRecipe.model_validate(cands[i]["recipe"])
                    for i, label in candidate_label.items()})
    recs = runner.evaluate_many([("test", r, {}, "test", None) for r in to_test.values()],
                                "test")
    test = {label: {n: rec["tasks"][n]["accuracy"] for n in names}
            for label, rec in zip(to_test, recs, strict=True)}
    test_points = [(est[i].tolist(), [test[label][n] for n in names])
                   for i, label in candidate_label.items()]
    pareto = [{"recipe": cands[i]["recipe"], "estimates": cands[i]["estimates"]}
              for i in pareto_idx]
    result = EvolveResult(run_dir=runner.run_dir, best_recipe=best_recipe,
                          best_estimate=best["estimates"], test=test, pareto=pareto,
                          evaluations=len(runner.store.records),
                          new_evaluations=runner.new_evaluations, history=history,
                          notes=list(runner.space.notes))
    from evomerge.run.report import write_report

    write_report(result, names, est, test_points)
    best_dir = runner.run_dir / "best"
    if cfg.write_best and _stored_recipe(best_dir) != best_recipe:  # new, or an older best
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
