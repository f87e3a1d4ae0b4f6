"""pymoo algorithms (and random search) behind one ask/tell interface.

``ask()`` returns a population of genomes, ``tell(F)`` takes their objectives (to minimise,
one column per objective). With a fixed seed the sequence of asked genomes depends only on
the objectives told, which is what makes resume-by-replay exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evomerge.errors import ConfigError

OPTIMIZERS = ("ga", "de", "cmaes", "pso", "nsga2", "nsga3", "random")
MULTI = ("nsga2", "nsga3", "random")


class AskTell:
    """Common interface: ``ask() -> X``, ``tell(F)``, ``done``."""

    def ask(self) -> np.ndarray:
        raise NotImplementedError

    def tell(self, F: np.ndarray) -> None:  # noqa: N803
        raise NotImplementedError

    @property
    def done(self) -> bool:
        raise NotImplementedError


class RandomSearch(AskTell):
    def __init__(self, xl: np.ndarray, xu: np.ndarray, pop_size: int, n_gen: int, seed: int,
                 initial: np.ndarray | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.xl, self.xu, self.pop, self.n_gen = xl, xu, pop_size, n_gen
        self.gen = 0
        self.initial = initial

    def ask(self) -> np.ndarray:
        x = self.xl + self.rng.random((self.pop, len(self.xl))) * (self.xu - self.xl)
        if self.gen == 0 and self.initial is not None:
            x[: len(self.initial)] = self.initial[: self.pop]
        return x

    def tell(self, F: np.ndarray) -> None:  # noqa: N803
        self.gen += 1

    @property
    def done(self) -> bool:
        return self.gen >= self.n_gen


class PymooAskTell(AskTell):
    def __init__(self, algorithm: Any, n_var: int, n_obj: int, xl: np.ndarray, xu: np.ndarray,
                 n_gen: int, seed: int) -> None:
        from pymoo.core.problem import Problem

        self.problem = Problem(n_var=n_var, n_obj=n_obj, xl=xl, xu=xu)
        self.algorithm = algorithm
        self.algorithm.setup(self.problem, termination=("n_gen", n_gen), seed=seed,
                             verbose=False)
        self._pop: Any = None

    def ask(self) -> np.ndarray:
        self._pop = self.algorithm.ask()
        return np.asarray(self._pop.get("X"), dtype=float)

    def tell(self, F: np.ndarray) -> None:  # noqa: N803
        from pymoo.core.evaluator import Evaluator
        from pymoo.problems.static import StaticProblem

        Evaluator().eval(StaticProblem(self.problem, F=np.asarray(F, dtype=float)), self._pop)
        self.algorithm.tell(infills=self._pop)

    @property
    def done(self) -> bool:
        return not self.algorithm.has_next()


def make_optimizer(name: str, xl: np.ndarray, xu: np.ndarray, *, n_obj: int = 1,
                   pop_size: int = 10, n_gen: int = 5, seed: int = 0,
                   initial: np.ndarray | None = None) -> AskTell:
    """An ask/tell optimizer by name; ``initial`` genomes seed the first population."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r} (known: {', '.join(OPTIMIZERS)})")
    if n_obj > 1 and name not in MULTI:
        raise ConfigError(f"optimizer {name} is single-objective; use nsga2 or nsga3 for "
                          f"{n_obj} objectives")
    if pop_size < 2 or n_gen < 1:
        raise ConfigError("population size must be >= 2 and generations >= 1")
    if name == "random":
        return RandomSearch(xl, xu, pop_size, n_gen, seed, initial)
    from pymoo.operators.sampling.rnd import FloatRandomSampling

    sampling: Any = FloatRandomSampling()
    if initial is not None and len(initial):
        rng = np.random.default_rng(seed)
        rest = xl + rng.random((max(0, pop_size - len(initial)), len(xl))) * (xu - xl)
        sampling = np.vstack([initial[:pop_size], rest])
    n_var = len(xl)
    if name == "ga":
        from pymoo.algorithms.soo.nonconvex.ga import GA

        algo: Any = GA(pop_size=pop_size, sampling=sampling, eliminate_duplicates=True)
    elif name == "de":
        from pymoo.algorithms.soo.nonconvex.de import DE

        algo = DE(pop_size=pop_size, sampling=sampling)
    elif name == "pso":
        from pymoo.algorithms.soo.nonconvex.pso import PSO

        algo = PSO(pop_size=pop_size, sampling=sampling)
    elif name == "cmaes":
        from pymoo.algorithms.soo.nonconvex.cmaes import CMAES

        x0 = initial[0] if initial is not None and len(initial) else (xl + xu) / 2
        algo = CMAES(x0=x0, popsize=pop_size, sigma=0.3, restarts=0)
    elif name == "nsga2":
        from pymoo.algorithms.moo.nsga2 import NSGA2

        algo = NSGA2(pop_size=pop_size, sampling=sampling)
    else:
        from pymoo.algorithms.moo.nsga3 import NSGA3
        from pymoo.util.ref_dirs import get_reference_directions

        dirs = get_reference_directions("das-dennis", n_obj, n_partitions=max(2, pop_size // 2))
        algo = NSGA3(ref_dirs=dirs, pop_size=pop_size, sampling=sampling)
    return PymooAskTell(algo, n_var, n_obj, xl, xu, n_gen, seed)
