"""The search-space interface: genome <-> recipe, bounds, and a repair step for grids."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from evomerge.errors import ConfigError
from evomerge.recipe import MergeRecipe


@dataclass(frozen=True)
class Gene:
    """One coordinate of the genome: a named parameter, its bounds and optional grid step."""

    name: str
    low: float
    high: float
    step: float | None = None  # discrete grid: values low, low + step, ..., high
    choices: tuple[str, ...] | None = None  # categorical: the value is an index into these
    active: tuple[str, int] | None = None  # conditional: used only when gene [0] == [1]

    def repair(self, value: float) -> float:
        v = min(max(float(value), self.low), self.high)
        if self.step:
            v = self.low + round((v - self.low) / self.step) * self.step
            v = min(max(v, self.low), self.high)
            v = round(v, 10)
        return v


class SearchSpace(ABC):
    """Maps genomes (arrays within ``bounds``) to recipes and back."""

    genes: list[Gene]

    @cached_property
    def index(self) -> dict[str, int]:
        """Gene name -> position in the genome."""
        return {g.name: i for i, g in enumerate(self.genes)}

    @property
    def n_var(self) -> int:
        return len(self.genes)

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.array([g.low for g in self.genes]), np.array([g.high for g in self.genes]))

    def repair(self, genome: np.ndarray) -> np.ndarray:
        """Clip to bounds and snap discrete genes to their grid (really discrete values)."""
        genome = np.asarray(genome, dtype=float)
        if genome.shape != (self.n_var,):
            raise ConfigError(f"genome has {genome.shape} values, the space has {self.n_var}")
        return np.array([g.repair(v) for g, v in zip(self.genes, genome, strict=True)])

    @abstractmethod
    def to_recipe(self, genome: np.ndarray) -> MergeRecipe: ...

    @abstractmethod
    def endpoints(self) -> list[np.ndarray]:
        """Genomes that reproduce each input model (to seed the initial population)."""

    @property
    def notes(self) -> list[str]:
        """What the user should know about this space (e.g. bounds that exclude an input)."""
        return self.__dict__.setdefault("_notes", [])

    def _endpoint(self, ideal: np.ndarray, label: str) -> np.ndarray:
        """``ideal`` (the genome of an input model) within the bounds; when the bounds cut
        it, the search cannot return that model unchanged: noted once."""
        fitted = self.repair(ideal)
        if not np.allclose(fitted, ideal):
            note = (f"the search space's bounds exclude the input model {label} (its genome "
                    f"{np.round(ideal, 3).tolist()} was clipped to "
                    f"{np.round(fitted, 3).tolist()}): widen them to let the search return it")
            if note not in self.notes:
                self.notes.append(note)
        return fitted

    def describe(self) -> list[str]:
        return [f"{g.name} in [{g.low}, {g.high}]" + (f" step {g.step}" if g.step else "")
                for g in self.genes]
