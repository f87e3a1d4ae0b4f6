"""tinyBenchmarks' p-IRT and gp-IRT: the candidate's own ability, fitted on the subset."""

from __future__ import annotations

import numpy as np

from evomerge.fitness.estimators.base import ESTIMATORS, Estimator


@ESTIMATORS.register("pirt")
class PIRT(Estimator):
    name = "pirt"
    needs_irt = True

    def _estimate(self, y: np.ndarray, weighted: np.ndarray) -> np.ndarray:
        return self.pirt(y, weighted)


@ESTIMATORS.register("gpirt")
class GPIRT(Estimator):
    """lam * weighted + (1 - lam) * p-IRT; lam "auto" by tinyBenchmarks' shrinkage."""

    name = "gpirt"
    needs_irt = True

    def _estimate(self, y: np.ndarray, weighted: np.ndarray) -> np.ndarray:
        return self.mixed(self.lam, self.pirt, y, weighted)
