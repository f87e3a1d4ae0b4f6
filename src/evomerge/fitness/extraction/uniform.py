"""A uniform random subset: the baseline, no calibration needed."""

from __future__ import annotations

import numpy as np

from evomerge.fitness.extraction.base import (
    EXTRACTIONS,
    Extraction,
    ExtractionInputs,
    check_size,
)
from evomerge.fitness.subset import Subset


def random_subset(total: int, n: int, seed: int = 0) -> Subset:
    check_size(n, total)
    items = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    return Subset(items=items, weights=np.full(n, 1.0 / n), n_total=total, method="random",
                  seed=seed)


@EXTRACTIONS.register("random")
class RandomExtraction(Extraction):
    def extract(self, inputs: ExtractionInputs, n: int, seed: int) -> Subset:
        return random_subset(inputs.total, n, seed)
