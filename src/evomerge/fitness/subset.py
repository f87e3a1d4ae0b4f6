"""The reduced dataset: item indices into a task's search split and their weights."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from evomerge.errors import ConfigError


@dataclass
class Subset:
    """The reduced dataset: item indices into the full benchmark and their weights."""

    items: np.ndarray
    weights: np.ndarray
    n_total: int
    method: str = "random"
    seed: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.items = np.asarray(self.items, dtype=int)
        self.weights = np.asarray(self.weights, dtype=float)
        if len(self.items) != len(self.weights):
            raise ConfigError("subset items and weights differ in length")
        if not np.isclose(self.weights.sum(), 1.0):
            raise ConfigError("subset weights must sum to 1")

    @property
    def n(self) -> int:
        return len(self.items)

    def unseen(self) -> np.ndarray:
        mask = np.ones(self.n_total, dtype=bool)
        mask[self.items] = False
        return np.flatnonzero(mask)

    def to_json(self) -> dict[str, object]:
        return {"items": self.items.tolist(), "weights": self.weights.tolist(),
                "n_total": self.n_total, "method": self.method, "seed": self.seed}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Subset:
        return cls(items=np.asarray(data["items"]), weights=np.asarray(data["weights"]),
                   n_total=int(data["n_total"]), method=str(data.get("method", "random")),
                   seed=int(data.get("seed", 0)))
