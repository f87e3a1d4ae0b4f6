"""``evolve``: a search from config to result. Genome -> recipe -> weights merged in place
into one live model -> evaluation on the reduced dataset -> estimated accuracy -> optimizer.

The parts: components come from their registries (spaces, optimizers, estimators,
extractions, backends, task sources); ``evaluations`` answers jobs from the run record or
the backend; ``search`` is the ask/tell loop; ``finish`` tests and reports. Resume replays
the seeded optimizer from the start and answers every evaluation already recorded from the
store, so a resumed run repeats no finished evaluation and ends exactly where an
uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from evomerge.config import EvolveConfig
from evomerge.device import resolve_device
from evomerge.errors import ConfigError, EvomergeError, ModelError
from evomerge.eval.sources import load_task_pair
from evomerge.fitness.calibration import (
    calibrate_task,
    check_fitness,
    fidelity_fitness,
    needs_calibration,
)
from evomerge.io.checkpoint import TensorSource
from evomerge.io.hf import live_names, load_tokenizer
from evomerge.io.lora import open_model
from evomerge.io.naming import group_filters, num_layers_of
from evomerge.io.outdir import (
    atomic_write_text,
    check_replaceable,
    check_target,
    make_parents,
    write_marker,
)
from evomerge.memory import (
    MemoryPlan,
    auto_batch_size,
    available,
    check_fits,
    longest_sequence,
    search_plan,
)
from evomerge.merge.registry import get_method
from evomerge.merge.vocab import aligned_inputs
from evomerge.optim import OPTIMIZERS, SearchContext
from evomerge.run.backends import make_backend
from evomerge.run.baselines import model_recipe
from evomerge.run.evaluations import EvalJob, Evaluations, Progress
from evomerge.run.finish import EvolveResult, finish
from evomerge.run.precheck import check_inputs
from evomerge.run.resume import check_resume, check_task_items, write_run_info
from evomerge.run.search import Search, TaskState
from evomerge.run.store import LOCK_FILE, RECORD_FILE, RunLock, RunStore
from evomerge.spaces import SearchSpace, SpaceInputs, build_space

__all__ = ["EvolveResult", "Runner", "evolve", "model_recipe"]


class Runner:
    """A validated search: everything is checked and the models are read here, before the
    run directory is touched."""

    def __init__(self, config: EvolveConfig, run_dir: Path, progress: Progress | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.cfg, self.run_dir = config, run_dir
        self.config_path = str(run_dir / "config.yaml")  # what `evomerge eval --tasks` reads
        self.progress = progress or (lambda *a: None)
        self.log = log or (lambda s: None)
        resolve_device(config.device)  # a CUDA request without CUDA fails here
        get_method(config.merge_method)
        names = [config.base_model, *config.models]
        opened = {m: open_model(m) for m in names}
        checkpoints, vocab = aligned_inputs(config.tokenizer_source, names, config.base_model,
                                            opened)
        self.tasks = [TaskState(t.name, *load_task_pair(t)) for t in config.tasks]
        base = checkpoints[config.base_model]
        live_names(config.base_model, opened[config.base_model])  # one it cannot write live
        inputs = SpaceInputs(config.merge_method, list(config.models), config.base_model,
                             num_layers_of(base.config, base.names()), group_filters(base.names()),
                             data=config.statistics_data())
        self.space: SearchSpace = build_space(config.space, inputs)
        wanting = [m for m in [config.merge_method, *getattr(config.space, "methods", [])]
                   if get_method(m).statistics]
        if wanting and config.data is None:
            raise ConfigError(f"{wanting[0]} learns from data: give the config a data: block "
                              "(e.g. data: {zoo: add_it, limit: 64}, or file / lm_eval as "
                              "in np-merge)")
        if self.space.stacks_models and config.tokenizer_source is not None:
            raise ConfigError(f"the {config.space.type} space stacks the models' own layers "
                              "and embeddings; it does not merge vocabularies "
                              "(tokenizer_source): use models that share one")
        self._probe_merge(checkpoints)
        check_fitness(config.fitness, {ts.name: len(ts.search.items) for ts in self.tasks})
        self.optimizer_cls = OPTIMIZERS.get(config.optimizer.name)
        self.optimizer_cls.check(config.optimizer, self._context())  # before any work
        self.memory = self._memory_plan(checkpoints, vocab)
        self.log(f"memory plan: {self.memory.describe()}")
        self.backend = make_backend(self.cfg)  # reads the models (here or on workers)

    def _memory_plan(self, sources: dict[str, TensorSource], vocab: Any) -> MemoryPlan:
        """What the search will hold (memory.py), refused when it cannot fit and
        ``memory_check`` is on, naming the settings that would fit."""
        cfg = self.cfg
        tok = vocab.tokenizer if vocab is not None else load_tokenizer(cfg.base_model)
        seq_len = longest_sequence([t for ts in self.tasks for t in (ts.search, ts.test)], tok)

        def plan(dtype: str, offload: bool, batch: int | None = None) -> MemoryPlan:
            return search_plan(
                sources, device=cfg.device, dtype=dtype, offload=offload,
                reuses_task_vectors=cfg.merge_method == "task_arithmetic",
                batch_size=batch or cfg.batch_size, seq_len=seq_len,  # type: ignore[arg-type]
                aligned=vocab is not None, stacks_models=self.space.stacks_models)

        if cfg.batch_size == "auto":  # the largest batch the plan fits, for the workers too
            place = "cpu" if cfg.device.startswith("cpu") else cfg.device
            n = auto_batch_size(plan(cfg.dtype, cfg.offload, 1), available(place))
            self.log(f"batch_size auto: {n} items per forward pass")
            self.cfg = cfg = cfg.model_copy(update={"batch_size": n})

        chosen = plan(cfg.dtype, cfg.offload)
        if cfg.memory_check:
            others = {}
            if cfg.dtype == "float32":
                others["dtype: bfloat16"] = plan("bfloat16", cfg.offload)
            if not cfg.offload and not cfg.device.startswith("cpu"):
                others["offload: true"] = plan(cfg.dtype, True)
                if cfg.dtype == "float32":
                    others["dtype: bfloat16 and offload: true"] = plan("bfloat16", True)
            free = {"device": available(cfg.device), "host": available("cpu")}
            check_fits(chosen, others, free)
        return chosen

    def _context(self, slots: int = 1) -> SearchContext:
        return SearchContext(self.space, n_obj=len(self.tasks), seed=self.cfg.seed,
                             n_items=min(len(ts.search.items) for ts in self.tasks),
                             slots=slots, run_dir=self.run_dir)

    def _probe_merge(self, checkpoints: dict[str, TensorSource]) -> None:
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

    def calibrate(self, evals: Evaluations) -> None:
        """Each task's fitness: a multi-fidelity optimizer scores by the mean over nested
        budgets; otherwise the reduced dataset and estimator, fitted on full evaluations of
        the base, the endpoints and random merges when the estimator or extraction needs
        them."""
        cfg, f = self.cfg, self.cfg.fitness
        budgets = self.optimizer_cls.budgets(cfg.optimizer, self._context())
        if budgets is not None:
            for k, ts in enumerate(self.tasks):
                ts.fitness = fidelity_fitness(len(ts.search.items), budgets[1],
                                              cfg.seed + 1000 * k)
            return self._write_subsets()
        rng = np.random.default_rng(cfg.seed + 7)
        xl, xu = self.space.bounds
        endpoints = self.space.endpoints()
        genomes = endpoints + [self.space.repair(xl + rng.random(len(xl)) * (xu - xl))
                               for _ in range(f.calibration_merges)]
        recipes = [model_recipe(cfg.base_model)] + [self.space.to_recipe(g) for g in genomes]
        records = []
        if needs_calibration(f):
            records = evals.run([EvalJob("calibration", r, {}) for r in recipes],
                                "calibration", lambda: "full search split")
        for ts in self.tasks:
            full = (np.array([rec["tasks"][ts.name]["correct"] for rec in records], dtype=float)
                    if records else None)
            strata = [it.meta.get(f.stratify_by, "") if f.stratify_by else ""
                      for it in ts.search.items]
            ts.fitness = calibrate_task(f, cfg.seed, ts.name, strata, full, len(endpoints))
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
            {ts.name: {**ts.fitness.subset.to_json(), "ids": ts.subset_ids()}  # type: ignore[union-attr]
             for ts in self.tasks if ts.fitness is not None}, sort_keys=False))

    def run(self, store: RunStore) -> EvolveResult:
        evals = Evaluations(store, self.backend, self.progress)
        warnings = check_inputs(self.cfg, self.tasks, evals, self.config_path)
        for w in warnings:
            self.log(f"warning: {w}")
        self.calibrate(evals)
        o = self.cfg.optimizer
        initial = self.space.endpoints() if o.seed_endpoints else None
        optimizer = self.optimizer_cls.create(o, self._context(self.backend.slots), initial)
        search = Search(self.space, self.tasks, evals, optimizer,
                        self.optimizer_cls.termination(o))
        history = search.run()
        return finish(self.run_dir, self.cfg, self.tasks, evals, history,
                      [*warnings, *self.space.notes])


def evolve(config: EvolveConfig, *, resume: bool = False, fresh: bool = False,
           progress: Progress | None = None, log: Callable[[str], None] | None = None
           ) -> EvolveResult:
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
    runner = Runner(config, run_dir, progress, log)  # validates everything; writes nothing
    if resume:
        check_task_items(run_dir, runner.tasks)
    make_parents(run_dir / RECORD_FILE)  # the run directory and its parents
    lock = RunLock(run_dir)
    try:
        if not resume:
            _clear_run(run_dir)
            write_marker(run_dir, "run")
        # on resume, an allowed extension (checked above) becomes the run's config
        write_run_info(run_dir, config, runner.tasks)
        runner.write_splits()
        atomic_write_text(run_dir / "config.yaml",
                          yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        store = RunStore(run_dir)
        try:
            return runner.run(store)
        finally:
            store.close()
            runner.backend.close()
    finally:
        lock.release()


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


