"""pymoo's algorithms (GA, DE, CMA-ES, PSO; NSGA-II and NSGA-III for several objectives)
through pymoo's own ask/tell: one ask is one generation."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from evomerge.errors import ConfigError
from evomerge.optim.base import OPTIMIZERS, Optimizer, OptimizerOptions, SearchContext, Trial


def _algorithm(name: str, pop_size: int, sampling: Any, x0: np.ndarray, n_obj: int) -> Any:
    if name == "ga":
        from pymoo.algorithms.soo.nonconvex.ga import GA

        return GA(pop_size=pop_size, sampling=sampling, eliminate_duplicates=True)
    if name == "de":
        from pymoo.algorithms.soo.nonconvex.de import DE

        return DE(pop_size=pop_size, sampling=sampling)
    if name == "pso":
        from pymoo.algorithms.soo.nonconvex.pso import PSO

        return PSO(pop_size=pop_size, sampling=sampling)
    if name == "cmaes":
        from pymoo.algorithms.soo.nonconvex.cmaes import CMAES

        return CMAES(x0=x0, popsize=pop_size, sigma=0.3, restarts=0)
    if name == "nsga2":
        from pymoo.algorithms.moo.nsga2 import NSGA2

        return NSGA2(pop_size=pop_size, sampling=sampling)
    from pymoo.algorithms.moo.nsga3 import NSGA3
    from pymoo.util.ref_dirs import get_reference_directions

    dirs = get_reference_directions("das-dennis", n_obj, n_partitions=max(2, pop_size // 2))
    return NSGA3(ref_dirs=dirs, pop_size=pop_size, sampling=sampling)


class PymooOptions(OptimizerOptions):
    pass


class PymooOptimizer(Optimizer):
    """One pymoo algorithm; subclasses only name it."""

    Options = PymooOptions
    algorithm_name: ClassVar[str] = ""

    def __init__(self, algorithm: Any, xl: np.ndarray, xu: np.ndarray, n_obj: int,
                 n_gen: int, seed: int) -> None:
        from pymoo.core.problem import Problem

        self.problem = Problem(n_var=len(xl), n_obj=n_obj, xl=xl, xu=xu)
        self.algorithm = algorithm
        self.algorithm.setup(self.problem, termination=("n_gen", n_gen), seed=seed,
                             verbose=False)
        self._pop: Any = None
        self.gen = 0

    @classmethod
    def check(cls, options: Any, ctx: SearchContext) -> None:
        super().check(options, ctx)
        cls.create(options, ctx)  # pymoo's own checks, before any work

    @classmethod
    def create(cls, options: Any, ctx: SearchContext,
               initial: list[np.ndarray] | None = None) -> PymooOptimizer:
        from pymoo.operators.sampling.rnd import FloatRandomSampling

        xl, xu = ctx.space.bounds
        sampling: Any = FloatRandomSampling()
        if initial:
            rng = np.random.default_rng(ctx.seed)
            rest = xl + rng.random((max(0, options.pop_size - len(initial)), len(xl))) * (xu - xl)
            sampling = np.vstack([np.array(initial)[: options.pop_size], rest])
        x0 = initial[0] if initial else (xl + xu) / 2
        try:
            algo = _algorithm(cls.algorithm_name, options.pop_size, sampling, x0, ctx.n_obj)
        except ValueError as exc:
            raise ConfigError(f"optimizer {cls.algorithm_name}: {exc}") from None
        return cls(algo, xl, xu, ctx.n_obj, options.generations, ctx.seed)

    def ask(self) -> list[Trial]:
        self._pop = self.algorithm.ask()
        X = np.asarray(self._pop.get("X"), dtype=float)  # noqa: N806
        return [Trial(x, self.gen, i) for i, x in enumerate(X)]

    def tell(self, trials: list[Trial], values: np.ndarray) -> None:
        from pymoo.core.evaluator import Evaluator
        from pymoo.problems.static import StaticProblem

        Evaluator().eval(StaticProblem(self.problem, F=np.asarray(values, dtype=float)),
                         self._pop)
        self.algorithm.tell(infills=self._pop)
        self.gen += 1

    @property
    def done(self) -> bool:
        return not self.algorithm.has_next()


def _register(name: str, multi: bool) -> None:
    from typing import Literal

    options = type(f"{name.upper()}Options", (PymooOptions,),
                   {"__annotations__": {"name": Literal[name]}, "name": name,
                    "__module__": __name__})
    cls = type(f"Pymoo{name.upper()}", (PymooOptimizer,),
               {"algorithm_name": name, "multi_objective": multi, "Options": options,
                "__module__": __name__})
    OPTIMIZERS.register(name)(cls)


for _name, _multi in (("ga", False), ("de", False), ("cmaes", False), ("pso", False),
                      ("nsga2", True), ("nsga3", True)):
    _register(_name, _multi)
