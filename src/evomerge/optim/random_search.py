"""Uniform random search: the baseline every optimizer must beat."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from evomerge.optim.base import OPTIMIZERS, Optimizer, OptimizerOptions, SearchContext, Trial


class RandomOptions(OptimizerOptions):
    name: Literal["random"] = "random"


@OPTIMIZERS.register("random")
class RandomSearch(Optimizer):
    Options = RandomOptions
    multi_objective = True  # it ignores the values

    def __init__(self, xl: np.ndarray, xu: np.ndarray, pop_size: int, seed: int,
                 initial: list[np.ndarray] | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.xl, self.xu, self.pop = xl, xu, pop_size
        self.gen = 0
        self.initial = np.array(initial) if initial else None

    @classmethod
    def create(cls, options: Any, ctx: SearchContext,
               initial: list[np.ndarray] | None = None) -> RandomSearch:
        return cls(*ctx.space.bounds, options.pop_size, ctx.seed, initial)

    def ask(self) -> list[Trial]:
        x = self.xl + self.rng.random((self.pop, len(self.xl))) * (self.xu - self.xl)
        if self.gen == 0 and self.initial is not None:
            x[: len(self.initial)] = self.initial[: self.pop]
        return [Trial(g, self.gen, i) for i, g in enumerate(x)]

    def tell(self, trials: list[Trial], values: np.ndarray) -> None:
        self.gen += 1
