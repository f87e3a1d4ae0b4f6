"""MERGE3's mp-IRT and gmp-IRT: a merge's ability is a combination of its endpoint models'
abilities, fitted on the subset (far fewer free values than an ability of its own)."""

from __future__ import annotations

import numpy as np

from evomerge.fitness.estimators.base import ESTIMATORS, Estimator


@ESTIMATORS.register("mpirt")
class MPIRT(Estimator):
    name = "mpirt"
    needs_irt = True
    needs_endpoints = True

    def _estimate(self, y: np.ndarray, weighted: np.ndarray) -> np.ndarray:
        return self.mpirt(y, weighted)


@ESTIMATORS.register("gmpirt")
class GMPIRT(Estimator):
    """delta * weighted + (1 - delta) * mp-IRT."""

    name = "gmpirt"
    needs_irt = True
    needs_endpoints = True

    def _estimate(self, y: np.ndarray, weighted: np.ndarray) -> np.ndarray:
        return self.mixed(self.delta, self.mpirt, y, weighted)
