"""Choosing the reduced dataset: random, stratified, IRT-clustering and correctness-clustering
anchors. Seeded; the chosen items and weights are a ``Subset`` saved with the run."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evomerge.errors import ConfigError
from evomerge.fitness.estimators import Subset
from evomerge.fitness.irt import IRTModel


def _check(n: int, total: int) -> None:
    if not 0 < n <= total:
        raise ConfigError(f"subset size {n} must be between 1 and the {total} items")


def random_subset(total: int, n: int, seed: int = 0) -> Subset:
    _check(n, total)
    items = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    return Subset(items=items, weights=np.full(n, 1.0 / n), n_total=total, method="random",
                  seed=seed)


def stratified_subset(strata: Sequence[str], n: int, seed: int = 0) -> Subset:
    """Proportional allocation over strata (e.g. a metadata field), at least one per stratum
    where possible; weights make each stratum count by its share of the benchmark."""
    total = len(strata)
    _check(n, total)
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


def _kmeans_anchors(features: np.ndarray, n: int, seed: int, item_weights: np.ndarray | None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """k-means over rows; anchor = row nearest each centroid, weight = cluster share."""
    from scipy.cluster.vq import kmeans2

    total = features.shape[0]
    _check(n, total)
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
