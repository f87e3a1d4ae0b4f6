"""Anchor points: k-means clusters of items, one representative each, weighted by its
cluster's size (tinyBenchmarks' IRT anchors, and anchors over calibration correctness)."""

from __future__ import annotations

import numpy as np

from evomerge.fitness.extraction.base import (
    EXTRACTIONS,
    Extraction,
    ExtractionInputs,
    check_size,
)
from evomerge.fitness.irt import IRTModel
from evomerge.fitness.subset import Subset


def _kmeans_anchors(features: np.ndarray, n: int, seed: int, item_weights: np.ndarray | None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """k-means over rows; anchor = row nearest each centroid, weight = cluster share."""
    from scipy.cluster.vq import kmeans2

    total = features.shape[0]
    check_size(n, total)
    feats = features.astype(float)
    scale = feats.std(axis=0)
    feats = feats / np.where(scale > 0, scale, 1.0)
    centroids, labels = kmeans2(feats, n, minit="++", seed=seed, iter=50)
    w = item_weights if item_weights is not None else np.ones(total)
    anchors, weights = [], []
    taken: set[int] = set()
    for k in range(n):
        members = np.flatnonzero(labels == k)
        if len(members) == 0:
            continue
        dist = ((feats[members] - centroids[k]) ** 2).sum(axis=1)
        for idx in members[np.argsort(dist)]:
            if int(idx) not in taken:
                taken.add(int(idx))
                anchors.append(int(idx))
                weights.append(float(w[members].sum()))
                break
    weights_arr = np.asarray(weights)
    order = np.argsort(anchors)
    return np.asarray(anchors)[order], (weights_arr / weights_arr.sum())[order]


def irt_anchors(model: IRTModel, n: int, seed: int = 0) -> Subset:
    """tinyBenchmarks' anchor points: k-means over the item embeddings [a_i; b_i]."""
    features = np.concatenate([model.a, model.b[:, None]], axis=1)
    items, weights = _kmeans_anchors(features, n, seed, None)
    return Subset(items=items, weights=weights, n_total=model.n_items, method="irt_anchors",
                  seed=seed)


def correctness_anchors(responses: np.ndarray, n: int, seed: int = 0) -> Subset:
    """Anchors from k-means over items' correctness vectors across calibration models."""
    y = np.nan_to_num(np.asarray(responses, dtype=float), nan=0.5)
    items, weights = _kmeans_anchors(y.T, n, seed, None)
    return Subset(items=items, weights=weights, n_total=y.shape[1],
                  method="correctness_anchors", seed=seed)


@EXTRACTIONS.register("irt_anchors")
class IRTAnchors(Extraction):
    needs_calibration = True

    def extract(self, inputs: ExtractionInputs, n: int, seed: int) -> Subset:
        assert inputs.irt is not None
        return irt_anchors(inputs.irt, n, seed)


@EXTRACTIONS.register("correctness_anchors")
class CorrectnessAnchors(Extraction):
    needs_calibration = True

    def extract(self, inputs: ExtractionInputs, n: int, seed: int) -> Subset:
        assert inputs.responses is not None
        return correctness_anchors(inputs.responses, n, seed)
