"""Stratified sampling over a metadata field, weighted by each stratum's share."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evomerge.fitness.extraction.base import (
    EXTRACTIONS,
    Extraction,
    ExtractionInputs,
    check_size,
)
from evomerge.fitness.subset import Subset


def stratified_subset(strata: Sequence[str], n: int, seed: int = 0) -> Subset:
    """Proportional allocation over strata (e.g. a metadata field), at least one per stratum
    where possible; weights make each stratum count by its share of the benchmark."""
    total = len(strata)
    check_size(n, total)
    rng = np.random.default_rng(seed)
    labels = np.asarray(strata)
    groups = {s: np.flatnonzero(labels == s) for s in sorted(set(strata))}
    shares = {s: len(g) / total for s, g in groups.items()}
    alloc = {s: max(1, int(round(shares[s] * n))) for s in groups}
    while sum(alloc.values()) > n:  # trim the largest allocations first
        s = max(alloc, key=lambda k: (alloc[k], k))
        alloc[s] -= 1
    items, weights = [], []
    for s, idx in groups.items():
        k = min(alloc[s], len(idx))
        if k == 0:
            continue
        chosen = rng.choice(idx, size=k, replace=False)
        items += chosen.tolist()
        weights += [shares[s] / k] * k
    w = np.asarray(weights)
    order = np.argsort(items)
    return Subset(items=np.asarray(items)[order], weights=(w / w.sum())[order], n_total=total,
                  method="stratified", seed=seed)


@EXTRACTIONS.register("stratified")
class StratifiedExtraction(Extraction):
    needs_strata = True

    def extract(self, inputs: ExtractionInputs, n: int, seed: int) -> Subset:
        assert inputs.strata is not None  # checked when the run is set up
        return stratified_subset(inputs.strata, n, seed)
