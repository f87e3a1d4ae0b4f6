"""Cheap fitness: IRT fitting, subset extraction, accuracy estimators, calibration."""

from evomerge.fitness.estimators import ESTIMATORS, Estimator, make_estimator
from evomerge.fitness.extraction import (
    EXTRACTIONS,
    correctness_anchors,
    irt_anchors,
    random_subset,
    stratified_subset,
)
from evomerge.fitness.irt import IRTModel, fit_ability, fit_irt, fit_merge_weights
from evomerge.fitness.subset import Subset

__all__ = [
    "ESTIMATORS",
    "EXTRACTIONS",
    "Estimator",
    "IRTModel",
    "Subset",
    "correctness_anchors",
    "fit_ability",
    "fit_irt",
    "fit_merge_weights",
    "irt_anchors",
    "make_estimator",
    "random_subset",
    "stratified_subset",
]
