"""SMAC3's multi-fidelity facade with Hyperband behind an ask/tell interface (extra
``[smac]``): the fidelity is a number of evaluation items, the configuration space is built
from the search space's genes (categorical and conditional genes included), and several
objectives go through ParEGO.

``ask()`` returns as many trials as the backend evaluates at once, each a genome and its
budget; ``tell`` answers them in order. With a fixed seed, the sequence of asks depends only
on the costs told, so resume-by-replay stays exact.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from evomerge.errors import ConfigError
from evomerge.optim.base import (
    OPTIMIZERS,
    Optimizer,
    OptimizerOptions,
    SearchContext,
    Termination,
    Trial,
)
from evomerge.spaces.base import Gene

_SCENARIO_TRIALS = 1_000_000


def configuration_space(genes: list[Gene], seed: int) -> Any:
    from ConfigSpace import (
        Categorical,
        ConfigurationSpace,
        EqualsCondition,
        Float,
    )

    cs = ConfigurationSpace(seed=seed)
    params = {}
    for g in genes:
        if g.choices is not None:
            params[g.name] = Categorical(g.name, list(g.choices), default=g.choices[0])
        elif g.low == g.high:
            continue  # fixed: not a dimension
        else:
            params[g.name] = Float(g.name, (g.low, g.high), default=(g.low + g.high) / 2)
    cs.add(list(params.values()))
    by_name = {g.name: g for g in genes}
    for g in genes:
        if g.active is not None and g.name in params:
            parent = by_name[g.active[0]]
            assert parent.choices is not None
            cs.add(EqualsCondition(params[g.name], params[parent.name],
                                   parent.choices[g.active[1]]))
    return cs


class SMACOptions(OptimizerOptions):
    name: Literal["smac"] = "smac"
    # the fidelity is a number of search items per task, from min_items to max_items
    # (default: 100 to 1000, scaled down to the smallest task's search split)
    eta: int = Field(default=3, ge=2)  # Hyperband's reduction factor
    # the lowest fidelity, in search items per task (default 1/10 of max_items)
    min_items: int | None = Field(default=None, ge=1)
    # the highest fidelity (default min(1000, the smallest task's search split))
    max_items: int | None = Field(default=None, ge=1)
    trials: int | None = Field(default=None, ge=1)  # default pop_size * generations


def _import_smac() -> None:
    try:
        import smac  # noqa: F401
    except ImportError:
        raise ConfigError("optimizer smac needs SMAC3: pip install 'evomerge[smac]'") from None


@OPTIMIZERS.register("smac")
class SMACAskTell(Optimizer):
    Options = SMACOptions
    multi_objective = True  # ParEGO

    @classmethod
    def check(cls, options: Any, ctx: SearchContext) -> None:
        super().check(options, ctx)
        cls.budgets(options, ctx)
        _import_smac()

    @classmethod
    def budgets(cls, options: Any, ctx: SearchContext) -> tuple[int, int]:
        """(min, max) items per task: 100 to 1000 by default, scaled to the smallest task's
        search split."""
        n = ctx.n_items
        hi = options.max_items or min(1000, n)
        lo = options.min_items or max(1, round(hi * 100 / 1000))
        if hi > n:
            raise ConfigError(f"max_items {hi} exceeds the {n} search items of the smallest task")
        if not 1 <= lo <= hi:
            raise ConfigError(f"min_items {lo} must lie in [1, max_items {hi}]")
        return lo, hi

    @classmethod
    def termination(cls, options: Any) -> Termination:
        return Termination(trials=cls._n_trials(options), item_budget=options.item_budget,
                           patience=options.patience)

    @staticmethod
    def _n_trials(options: Any) -> int:
        return int(options.trials or options.pop_size * options.generations)

    @classmethod
    def create(cls, options: Any, ctx: SearchContext,
               initial: list[np.ndarray] | None = None) -> SMACAskTell:
        lo, hi = cls.budgets(options, ctx)
        assert ctx.run_dir is not None
        return cls(ctx.space.genes, n_obj=ctx.n_obj, min_budget=lo, max_budget=hi,
                   eta=options.eta, n_trials=cls._n_trials(options), seed=ctx.seed,
                   initial=initial, output_dir=ctx.run_dir / "smac", slots=ctx.slots)

    def __init__(self, genes: list[Gene], *, n_obj: int, min_budget: int, max_budget: int,
                 eta: int = 3, n_trials: int = 10_000, seed: int = 0,
                 initial: list[np.ndarray] | None = None, output_dir: Path,
                 slots: int = 1) -> None:
        _import_smac()
        from smac import MultiFidelityFacade, Scenario

        if not 1 <= min_budget <= max_budget:
            raise ConfigError(f"fidelity bounds [{min_budget}, {max_budget}] are not "
                              "1 <= min <= max items")
        if eta < 2:
            raise ConfigError("hyperband eta must be >= 2")
        self.genes = genes
        self.by_name = {g.name: g for g in genes}
        self.cs = configuration_space(genes, seed)
        objectives = [f"obj{i}" for i in range(n_obj)] if n_obj > 1 else "cost"
        # SMAC sizes its initial design from n_trials; the trial count is enforced here
        # instead, so that more trials on resume extend a run without changing its start
        scenario = Scenario(self.cs, deterministic=True, objectives=objectives,
                            n_trials=_SCENARIO_TRIALS, min_budget=min_budget,
                            max_budget=max_budget,
                            seed=seed, output_directory=output_dir)
        extra = [self.to_configuration(x) for x in (initial or [])]
        design = MultiFidelityFacade.get_initial_design(scenario, n_configs=max(4, len(extra)),
                                                        additional_configs=extra)
        # several objectives: incumbents only among configurations run at the highest
        # budget, so their trials always overlap (SMAC 2's default compares Pareto members
        # evaluated at different budgets and fails an assertion: SMAC3 issue #1050, PR #1129)
        intensifier = MultiFidelityFacade.get_intensifier(
            scenario, eta=eta,
            incumbent_selection="highest_budget" if n_obj > 1 else "highest_observed_budget")
        kwargs: dict[str, Any] = {}
        if n_obj > 1:
            from smac.multi_objective.parego import ParEGO

            kwargs["multi_objective_algorithm"] = ParEGO(scenario)
        logging.getLogger("smac").setLevel(logging.ERROR)
        self.smac = MultiFidelityFacade(scenario, _never_called, initial_design=design,
                                        intensifier=intensifier, overwrite=True,
                                        logging_level=False, **kwargs)
        _deterministic_local_search(self.smac)
        self.n_trials = n_trials
        self.slots = slots  # trials in flight: asked together, told in order
        self.asked = 0
        self._infos: list[Any] = []

    def to_configuration(self, x: np.ndarray) -> Any:
        from ConfigSpace import Configuration

        values: dict[str, Any] = {g.name: g.choices[int(round(v))]
                                  for g, v in zip(self.genes, x, strict=True) if g.choices}
        for g, v in zip(self.genes, x, strict=True):
            active = g.active is None or (
                values[g.active[0]] == self.by_name[g.active[0]].choices[g.active[1]])  # type: ignore[index]
            if g.choices is None and active and g.name in self.cs:
                values[g.name] = float(v)
        return Configuration(self.cs, values=values)

    def to_genome(self, config: Any) -> np.ndarray:
        """Inactive genes take their midpoint (they do not influence the recipe)."""
        d = dict(config)
        x = []
        for g in self.genes:
            if g.choices is not None:
                x.append(float(g.choices.index(d[g.name])))
            else:
                x.append(float(d.get(g.name, (g.low + g.high) / 2)))
        return np.array(x)

    def ask(self) -> list[Trial]:
        trials = []
        while len(trials) < self.slots and not self.done:
            with warnings.catch_warnings():  # SMAC's own empty-slice means on early trials
                warnings.simplefilter("ignore", RuntimeWarning)
                info = self.smac.ask()
            self._infos.append(info)
            trials.append(Trial(self.to_genome(info.config), self.asked, 0,
                                int(round(info.budget))))
            self.asked += 1
        return trials

    def tell(self, trials: list[Trial], values: np.ndarray) -> None:
        from smac.runhistory.dataclasses import TrialValue

        infos, self._infos = self._infos[: len(trials)], self._infos[len(trials):]
        for info, costs in zip(infos, np.asarray(values, dtype=float), strict=True):
            cost: float | list[float] = (float(costs[0]) if len(costs) == 1
                                         else [float(c) for c in costs])
            self.smac.tell(info, TrialValue(cost=cost, time=0.0))

    @property
    def done(self) -> bool:
        return self.asked >= self.n_trials


def _deterministic_local_search(smac: Any) -> None:
    """SMAC 2.x's local search collects its start points in a set of Configurations, whose
    hash is that of their repr string: the order, and so the next configurations, changed
    with PYTHONHASHSEED, i.e. between processes (a resumed run would diverge). Sorting the
    start points by their repr makes the search a function of the seed alone."""
    local = getattr(getattr(smac, "_acquisition_maximizer", None), "_local_search", None)
    original = getattr(local, "_get_initial_points", None)
    if original is None:
        return

    def ordered(*args: Any, **kwargs: Any) -> list[Any]:
        return sorted(original(*args, **kwargs), key=repr)

    local._get_initial_points = ordered


def _never_called(config: Any, seed: int = 0, budget: float = 0.0) -> float:
    raise RuntimeError("evomerge drives SMAC through ask/tell")
