"""From calibration responses to each task's fitness: the IRT model, the reduced dataset
and the estimator (the run evaluates the calibration recipes; this module decides what to
make of them). Multi-fidelity search instead scores a candidate by its mean over the first
``budget`` items of a seeded order (``fidelity_fitness``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from evomerge.errors import ConfigError
from evomerge.fitness.estimators import ESTIMATORS, Estimator, make_estimator
from evomerge.fitness.extraction import EXTRACTIONS, ExtractionInputs
from evomerge.fitness.irt import IRTModel, fit_ability, fit_irt
from evomerge.fitness.subset import Subset

if TYPE_CHECKING:
    from evomerge.config import FitnessConfig


@dataclass
class TaskFitness:
    """How one task scores a candidate: on ``subset`` items, by ``estimator``."""

    subset: Subset
    estimator: Estimator
    irt: IRTModel | None = None


def extraction_of(f: FitnessConfig) -> str:
    """The extraction to use: as configured, or for "auto" IRT anchors when the estimator
    fits an IRT model anyway (no extra cost) and random items otherwise."""
    if f.extraction != "auto":
        return f.extraction
    return "irt_anchors" if ESTIMATORS.get(f.estimator).needs_irt else "random"


def needs_calibration(f: FitnessConfig) -> bool:
    """Whether the run must first evaluate calibration recipes on the whole search split."""
    return ESTIMATORS.get(f.estimator).needs_irt or EXTRACTIONS.get(
        extraction_of(f)).needs_calibration


def check_fitness(f: FitnessConfig, task_sizes: dict[str, int]) -> None:
    """Refuse a fitness setting that cannot work with these tasks, before any work."""
    for name, n in task_sizes.items():
        if f.subset_size > n:
            raise ConfigError(f"task {name}: subset_size {f.subset_size} exceeds its "
                              f"{n} search items")
    for task_name, path in f.responses.items():  # read now: a bad file stops before work
        if task_name not in task_sizes:
            raise ConfigError(f"fitness.responses names task {task_name!r}, which is not "
                              f"one of the tasks ({', '.join(task_sizes)})")
        load_responses(path, task_sizes[task_name])
    if EXTRACTIONS.get(extraction_of(f)).needs_strata and not f.stratify_by:
        raise ConfigError(f"{f.extraction} extraction needs stratify_by (a metadata field)")


def calibrate_task(f: FitnessConfig, seed: int, task_name: str, strata: list[str],
                   full: np.ndarray | None, n_endpoints: int) -> TaskFitness:
    """The fitness of one task from its calibration rows ``full`` (models x search items:
    the base and the endpoints first, then random merges; None without calibration)."""
    n_total = len(strata)
    if full is not None and task_name in f.responses:
        full = np.vstack([full, load_responses(f.responses[task_name], n_total)])
    irt = None
    if full is not None:
        dims = f.irt_dims if f.irt_kind == "mirt" else 1
        irt, _ = fit_irt(full, kind=f.irt_kind, dims=dims, seed=seed)
    inputs = ExtractionInputs(total=n_total, strata=strata, irt=irt, responses=full)
    subset = EXTRACTIONS.get(extraction_of(f))().extract(inputs, f.subset_size, seed)
    cls = ESTIMATORS.get(f.estimator)
    thetas = None
    if cls.needs_endpoints:
        assert irt is not None and full is not None
        thetas = fit_ability(irt, full[: 1 + n_endpoints], np.arange(n_total))
    prior = math.inf if f.ability_prior == "none" else f.ability_prior
    estimator = cls(subset, irt=irt, endpoint_thetas=thetas, delta=f.delta, lam=f.delta,
                    calibration=full, ability_prior=prior)
    return TaskFitness(subset, estimator, irt)


def fidelity_fitness(n_total: int, max_items: int, seed: int) -> TaskFitness:
    """A seeded order of a task's search items; budget b = its first b items, so budgets
    are nested and a candidate never sees an item twice."""
    order = np.random.default_rng(seed).permutation(n_total)[:max_items]
    subset = Subset(items=order, weights=np.full(max_items, 1.0 / max_items),
                    n_total=n_total, method="fidelity_order", seed=seed)
    return TaskFitness(subset, make_estimator("mean", subset))


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
