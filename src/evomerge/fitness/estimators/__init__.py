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

Each estimator is one module here, a class registered in ``ESTIMATORS`` under its config
name; ``make_estimator(name, subset, ...)`` builds one.
"""

from evomerge.fitness.estimators.base import ESTIMATORS, Estimator, make_estimator, shrinkage
from evomerge.fitness.subset import Subset

__all__ = ["ESTIMATORS", "Estimator", "Subset", "make_estimator", "shrinkage"]
