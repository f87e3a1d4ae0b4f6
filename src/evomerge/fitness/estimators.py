"""Estimators: correctness on a few items -> estimated accuracy on the whole benchmark.

All are vectorised over a population: ``y`` is candidates x n (0/1 on the subset's items,
in the subset's order). With S the seen subset, N the benchmark size, w the subset weights
(summing to 1), p_i(theta) the IRT probability of item i:

- mean       = mean_S y
- weighted   = sum_S w_i y_i
- p-IRT      = (n/N) sum_S w_i y_i + (1 - n/N) mean_{i not in S} p_i(theta), theta fitted
               on the subset (tinyBenchmarks)
- gp-IRT     = lam * weighted + (1 - lam) * p-IRT
- mp-IRT     = p-IRT with theta = sum_j lambda_j theta_j over the endpoint models (MERGE3)
- gmp-IRT    = delta * weighted + (1 - delta) * mp-IRT
lam (and delta = "auto") = b^2 / (b^2 + v / (4 n)), b the IRT estimator's validation error,
v the mean per-model variance of y (tinyBenchmarks' choice).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from evomerge.errors import ConfigError
from evomerge.fitness.irt import IRTModel, fit_ability, fit_merge_weights

EstimatorName = Literal["mean", "weighted", "pirt", "gpirt", "mpirt", "gmpirt"]
ESTIMATORS = ("mean", "weighted", "pirt", "gpirt", "mpirt", "gmpirt")


@dataclass
class Subset:
    """The reduced dataset: item indices into the full benchmark and their weights."""

    items: np.ndarray
    weights: np.ndarray
    n_total: int
    method: str = "random"
    seed: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.items = np.asarray(self.items, dtype=int)
        self.weights = np.asarray(self.weights, dtype=float)
        if len(self.items) != len(self.weights):
            raise ConfigError("subset items and weights differ in length")
        if not np.isclose(self.weights.sum(), 1.0):
            raise ConfigError("subset weights must sum to 1")

    @property
    def n(self) -> int:
        return len(self.items)

    def unseen(self) -> np.ndarray:
        mask = np.ones(self.n_total, dtype=bool)
        mask[self.items] = False
        return np.flatnonzero(mask)

    def to_json(self) -> dict[str, object]:
        return {"items": self.items.tolist(), "weights": self.weights.tolist(),
                "n_total": self.n_total, "method": self.method, "seed": self.seed}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Subset:
        return cls(items=np.asarray(data["items"]), weights=np.asarray(data["weights"]),
                   n_total=int(data["n_total"]), method=str(data.get("method", "random")),
                   seed=int(data.get("seed", 0)))


def shrinkage(bias: float, variance: float, n: int) -> float:
    """tinyBenchmarks' lambda = b^2 / (b^2 + v / (4 n))."""
    denom = bias ** 2 + variance / (4 * n)
    return float(bias ** 2 / denom) if denom > 0 else 0.5


class Estimator:
    """One interface for every estimator: ``estimate(y)`` -> estimated accuracies."""

    def __init__(self, name: EstimatorName, subset: Subset, irt: IRTModel | None = None,
                 endpoint_thetas: np.ndarray | None = None, delta: float | str = 0.5,
                 lam: float | str = "auto", calibration: np.ndarray | None = None,
                 ability_prior: float | None = None) -> None:
        """``ability_prior``: the standard deviation of the N(0, sd^2) prior on abilities in
        p-IRT / gp-IRT (None: the IRT model's, 1.0 as in its fit); ``math.inf`` is plain
        maximum likelihood, tinyBenchmarks' own choice."""
        if name not in ESTIMATORS:
            raise ConfigError(f"unknown estimator {name!r} (known: {', '.join(ESTIMATORS)})")
        if name not in ("mean", "weighted") and irt is None:
            raise ConfigError(f"estimator {name} needs a fitted IRT model")
        if name in ("mpirt", "gmpirt") and endpoint_thetas is None:
            raise ConfigError(f"estimator {name} needs the endpoint models' abilities")
        if irt is not None and irt.n_items != subset.n_total:
            raise ConfigError(f"the IRT model covers {irt.n_items} items, the subset was drawn "
                              f"from {subset.n_total}")
        self.name = name
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
        if self.name == "mean":
            return y.mean(axis=1)
        weighted = y @ self.subset.weights
        if self.name == "weighted":
            return weighted
        single = self.name in ("pirt", "gpirt")
        irt_est = self.pirt(y, weighted) if single else self.mpirt(y, weighted)
        if self.name in ("pirt", "mpirt"):
            return irt_est
        mix = self._mix(self.lam, "pirt") if single else self._mix(self.delta, "mpirt")
        return mix * weighted + (1 - mix) * irt_est

    def thetas(self, y: np.ndarray) -> np.ndarray:
        """Abilities of the candidates under this estimator's ability model."""
        assert self.irt is not None
        if self.name in ("pirt", "gpirt"):
            return fit_ability(self.irt, y, self.subset.items, prior=self.ability_prior)
        lam = fit_merge_weights(self.irt, self.endpoint_thetas, y, self.subset.items)
        return lam @ np.atleast_2d(self.endpoint_thetas)

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

    def _mix(self, setting: float | str, base: str) -> float:
        if setting != "auto":
            return float(setting)
        if self._auto_mix is None:  # depends only on the subset and the calibration rows
            self._auto_mix = self._fit_mix(base)
        return self._auto_mix

    def _fit_mix(self, base: str) -> float:
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
        weighted = sub @ self.subset.weights
        est = self.pirt(sub, weighted) if base == "pirt" else self.mpirt(sub, weighted)
        bias = float(np.mean(np.abs(est - truth)))
        variance = float(np.mean(sub.var(axis=1)))
        return shrinkage(bias, variance, self.subset.n)
