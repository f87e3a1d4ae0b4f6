"""The estimator contract and the IRT pieces the IRT estimators share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from evomerge.errors import ConfigError
from evomerge.fitness.irt import IRTModel, fit_ability, fit_merge_weights
from evomerge.fitness.subset import Subset
from evomerge.registry import Registry


def shrinkage(bias: float, variance: float, n: int) -> float:
    """tinyBenchmarks' lambda = b^2 / (b^2 + v / (4 n))."""
    denom = bias ** 2 + variance / (4 * n)
    return float(bias ** 2 / denom) if denom > 0 else 0.5


class Estimator(ABC):
    """``estimate(y)`` -> estimated accuracies of a population from its subset answers.

    ``needs_irt``: the run fits an IRT model on calibration responses (full evaluations of
    the endpoints and random merges) first; ``needs_endpoints``: the abilities of the
    endpoint models too (mp-IRT)."""

    name: ClassVar[str] = ""
    needs_irt: ClassVar[bool] = False
    needs_endpoints: ClassVar[bool] = False

    def __init__(self, subset: Subset, irt: IRTModel | None = None,
                 endpoint_thetas: np.ndarray | None = None, delta: float | str = 0.5,
                 lam: float | str = "auto", calibration: np.ndarray | None = None,
                 ability_prior: float | None = None) -> None:
        """``ability_prior``: the standard deviation of the N(0, sd^2) prior on abilities in
        p-IRT / gp-IRT (None: the IRT model's, 1.0 as in its fit); ``math.inf`` is plain
        maximum likelihood, tinyBenchmarks' own choice."""
        if self.needs_irt and irt is None:
            raise ConfigError(f"estimator {self.name} needs a fitted IRT model")
        if self.needs_endpoints and endpoint_thetas is None:
            raise ConfigError(f"estimator {self.name} needs the endpoint models' abilities")
        if irt is not None and irt.n_items != subset.n_total:
            raise ConfigError(f"the IRT model covers {irt.n_items} items, the subset was drawn "
                              f"from {subset.n_total}")
        self.subset = subset
        self.irt = irt
        self.endpoint_thetas = endpoint_thetas
        self.delta = delta
        self.lam = lam
        self.calibration = calibration  # full responses (models x items) for "auto" weights
        self._auto_mix: float | None = None
        self.ability_prior = ability_prior

    def estimate(self, y: np.ndarray) -> np.ndarray:
        y = np.atleast_2d(np.asarray(y, dtype=float))
        if y.shape[1] != self.subset.n:
            raise ConfigError(f"expected {self.subset.n} answers per candidate, got {y.shape[1]}")
        return self._estimate(y, y @ self.subset.weights)

    @abstractmethod
    def _estimate(self, y: np.ndarray, weighted: np.ndarray) -> np.ndarray:
        """Estimates from the answers ``y`` and their weighted mean on the subset."""

    # -- shared by the IRT estimators ------------------------------------------------------
    def _extrapolate(self, theta: np.ndarray, weighted: np.ndarray) -> np.ndarray:
        assert self.irt is not None
        unseen = self.subset.unseen()
        share = self.subset.n / self.subset.n_total
        p_unseen = self.irt.prob(theta, unseen).mean(axis=1) if len(unseen) else 0.0
        return share * weighted + (1 - share) * p_unseen

    def pirt(self, y: np.ndarray, weighted: np.ndarray) -> np.ndarray:
        assert self.irt is not None
        return self._extrapolate(fit_ability(self.irt, y, self.subset.items,
                                             prior=self.ability_prior), weighted)

    def mpirt(self, y: np.ndarray, weighted: np.ndarray) -> np.ndarray:
        assert self.irt is not None and self.endpoint_thetas is not None
        lam = fit_merge_weights(self.irt, self.endpoint_thetas, y, self.subset.items)
        return self._extrapolate(lam @ np.atleast_2d(self.endpoint_thetas), weighted)

    def mixed(self, setting: float | str, irt_estimate: Any, y: np.ndarray,
              weighted: np.ndarray) -> np.ndarray:
        """``w * weighted + (1 - w) * irt_estimate(y, weighted)`` (gp-IRT, gmp-IRT), with
        ``w`` fixed, or "auto": tinyBenchmarks' shrinkage from the error of
        ``irt_estimate`` (a method like ``self.pirt``) on the calibration rows."""
        if setting != "auto":
            w = float(setting)
        else:
            if self._auto_mix is None:  # depends only on the subset and the calibration rows
                self._auto_mix = self._fit_mix(irt_estimate)
            w = self._auto_mix
        return w * weighted + (1 - w) * irt_estimate(y, weighted)

    def _fit_mix(self, irt_estimate: Any) -> float:
        if self.calibration is None:
            raise ConfigError("automatic mixing weight needs calibration responses")
        full = np.asarray(self.calibration, dtype=float)
        # rows with a missing answer on the subset cannot be estimated; the truth of a row
        # is the mean of the answers it has (user response matrices may hold NaN)
        full = full[~np.isnan(full[:, self.subset.items]).any(axis=1)]
        if not len(full):
            raise ConfigError("automatic mixing weight: no calibration row answers every "
                              "subset item")
        sub = full[:, self.subset.items]
        truth = np.nanmean(full, axis=1)
        est = irt_estimate(sub, sub @ self.subset.weights)
        bias = float(np.mean(np.abs(est - truth)))
        variance = float(np.mean(sub.var(axis=1)))
        return shrinkage(bias, variance, self.subset.n)


ESTIMATORS: Registry[type[Estimator]] = Registry("estimator", "evomerge.fitness.estimators")


def make_estimator(name: str, subset: Subset, **kwargs: Any) -> Estimator:
    """The estimator registered as ``name`` (an unknown name is a one-line ConfigError)."""
    return ESTIMATORS.get(name)(subset, **kwargs)
