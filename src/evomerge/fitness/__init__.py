"""Cheap fitness: IRT fitting, subset extraction, accuracy estimators."""

from evomerge.fitness.estimators import ESTIMATORS, Estimator, Subset
from evomerge.fitness.extraction import (
    correctness_anchors,
    irt_anchors,
    random_subset,
    stratified_subset,
)
from evomerge.fitness.irt import IRTModel, fit_ability, fit_irt, fit_merge_weights

__all__ = [
    "ESTIMATORS",
    "Estimator",
    "IRTModel",
    "Subset",
    "correctness_anchors",
    "fit_ability",
    "fit_irt",
    "fit_merge_weights",
    "irt_anchors",
    "random_subset",
    "stratified_subset",
]
