"""The optimizer contract: ask for trials, tell their objectives, stop on one termination.

Every optimizer (pymoo's algorithms, random search, SMAC's multi-fidelity Bayesian
optimisation) is a class registered in ``OPTIMIZERS`` under its config ``name``, with its
``Options``. ``ask()`` returns trials (a genome, its place in the run and, for
multi-fidelity optimizers, a budget in items per task); ``tell(trials, values)`` answers them
(one row per trial, one column per objective, to minimise). With a fixed seed the asks depend
only on the values told: that is what makes resume-by-replay exact.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from evomerge.registry import ComponentOptions, Registry
from evomerge.spaces.base import SearchSpace


@dataclass
class Trial:
    genome: np.ndarray
    generation: int  # generation of a population optimizer; trial number of a sequential one
    index: int = 0  # position within its generation
    budget: int | None = None  # items per task (multi-fidelity); None: the fitness subset


@dataclass(frozen=True)
class SearchContext:
    """What an optimizer is built for."""

    space: SearchSpace
    n_obj: int
    seed: int
    n_items: int = 0  # search items of the smallest task (the largest possible budget)
    slots: int = 1  # trials the backend evaluates at once
    run_dir: Path | None = None  # an optimizer may keep files in a folder of its own there


class OptimizerOptions(ComponentOptions):
    """The ``optimizer:`` block of an evolve config; ``name`` names the optimizer."""

    name: str
    pop_size: int = Field(default=10, ge=2)  # candidates per generation
    generations: int = Field(default=5, ge=1)  # generations (SMAC: see trials)
    seed_endpoints: bool = True  # the input models themselves start the search
    # stop once this many items were evaluated in the search (every optimizer)
    item_budget: int | None = Field(default=None, ge=1)
    # stop after this many generations (or trials) without a better best estimate
    patience: int | None = Field(default=None, ge=1)


@dataclass
class Termination:
    """One stopping rule for every optimizer: a count of generations or trials, an item
    budget and patience; ``update`` is called after each tell."""

    generations: int | None = None
    trials: int | None = None
    item_budget: int | None = None
    patience: int | None = None
    told_generations: int = 0
    told_trials: int = 0
    items: int = 0
    best: float = float("-inf")
    stale: int = 0
    reason: str = field(default="")

    def update(self, trials: list[Trial], values: np.ndarray, new_items: int) -> None:
        self.told_generations += 1
        self.told_trials += len(trials)
        self.items += new_items
        best = float(-np.min(values[:, 0])) if len(values) else float("-inf")
        if best > self.best + 1e-12:
            self.best, self.stale = best, 0
        else:
            self.stale += 1

    def done(self, optimizer: Optimizer) -> bool:
        checks = [
            (optimizer.done, "the optimizer finished"),
            (self.generations is not None and self.told_generations >= self.generations,
             f"{self.generations} generations"),
            (self.trials is not None and self.told_trials >= self.trials, f"{self.trials} trials"),
            (self.item_budget is not None and self.items >= self.item_budget,
             f"item budget {self.item_budget} spent"),
            (self.patience is not None and self.stale >= self.patience,
             f"no better estimate in {self.patience} steps (patience)"),
        ]
        self.reason = next((why for hit, why in checks if hit), "")
        return bool(self.reason)


class Optimizer(ABC):
    Options: ClassVar[type[OptimizerOptions]] = OptimizerOptions
    multi_objective: ClassVar[bool] = False  # may take several objectives

    @classmethod
    def check(cls, options: Any, ctx: SearchContext) -> None:
        """Refuse bad settings before any work (nothing is written)."""
        from evomerge.errors import ConfigError

        if ctx.n_obj > 1 and not cls.multi_objective:
            multi = [n for n, c in OPTIMIZERS.items() if c.multi_objective]
            raise ConfigError(f"optimizer {options.name} is single-objective; use one of "
                              f"{', '.join(multi)} for {ctx.n_obj} objectives")

    @classmethod
    def budgets(cls, options: Any, ctx: SearchContext) -> tuple[int, int] | None:
        """(min, max) items per task for a multi-fidelity optimizer; None: every trial is
        scored on the fitness subset by the configured estimator."""
        return None

    @classmethod
    def termination(cls, options: Any) -> Termination:
        return Termination(generations=options.generations, item_budget=options.item_budget,
                           patience=options.patience)

    @classmethod
    @abstractmethod
    def create(cls, options: Any, ctx: SearchContext,
               initial: list[np.ndarray] | None = None) -> Optimizer:
        """The optimizer, seeded; ``initial`` genomes start the search."""

    @abstractmethod
    def ask(self) -> list[Trial]: ...

    @abstractmethod
    def tell(self, trials: list[Trial], values: np.ndarray) -> None: ...

    @property
    def done(self) -> bool:
        """The optimizer's own end (e.g. CMA-ES converged); limits are the Termination's."""
        return False


OPTIMIZERS: Registry[type[Optimizer]] = Registry("optimizer", "evomerge.optim")
