"""Plain and weighted means over the subset: no model of the items, no calibration."""

from __future__ import annotations

import numpy as np

from evomerge.fitness.estimators.base import ESTIMATORS, Estimator


@ESTIMATORS.register("mean")
class Mean(Estimator):
    name = "mean"

    def _estimate(self, y: np.ndarray, weighted: np.ndarray) -> np.ndarray:
        return y.mean(axis=1)


@ESTIMATORS.register("weighted")
class Weighted(Estimator):
    """The subset's weights (e.g. anchors' cluster sizes) make it stand for the benchmark."""

    name = "weighted"

    def _estimate(self, y: np.ndarray, weighted: np.ndarray) -> np.ndarray:
        return weighted
