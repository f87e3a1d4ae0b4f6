"""The search-space interface: genome <-> recipe, bounds, and a repair step for grids."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, model_validator

from evomerge.errors import ConfigError
from evomerge.recipe import MergeRecipe
from evomerge.registry import ComponentOptions, Registry


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


@dataclass(frozen=True)
class SpaceInputs:
    """What a space is built over: the job's merge method, models, base and its depth."""

    method: str
    models: list[str]
    base: str
    num_layers: int
    filters: dict[str, list[str]] | None = None  # module groups (None: from the base's names)
    data: dict[str, Any] | None = None  # data-dependent methods' statistics data (recipes)


@dataclass(frozen=True)
class SearchedParam:
    """A merge-method parameter that a space turns into genes (one per model if per-model)."""

    name: str
    per_model: bool
    low: float
    high: float
    integer: bool
    default: float | None  # the method's default: the endpoint value of non-weight genes

    def gene(self, name: str, grid: float | None,
             active: tuple[str, int] | None = None) -> Gene:
        return Gene(name, self.low, self.high, 1.0 if self.integer else grid, active=active)

    def endpoint(self) -> float:
        """The value that leaves a model as it is (weight aside): density 1, else default."""
        if self.name in ("density", "t"):
            return 1.0
        return self.default if self.default is not None else (self.low + self.high) / 2


def searched_params(space: str, method: str, search: list[str] | None,
                    bounds: dict[str, tuple[float, float]],
                    fixed: dict[str, Any] | None = None, add: bool = False,
                    allow_empty: bool = False) -> list[SearchedParam]:
    """The method's parameters a space searches, with their bounds, in the method's order.

    By default the required numeric parameters plus ``density`` (what a user must choose);
    ``search`` names the parameters instead (``lambda``, ``gamma``, ``select_topk``...), or
    with ``add`` the ones searched besides those. Bounds come from ``bounds``, else from the
    parameter's own range when it has both ends. One line, before any work, when a required
    parameter is neither searched nor fixed, or (unless ``allow_empty``: an LFS category
    may have no genes) when nothing is left to search."""
    from evomerge.merge.registry import get_method
    from evomerge.registry import unknown

    m = get_method(method)
    numeric = [p for p in m.params() if p.type in (int, float)]
    names = {p.name for p in numeric}
    wanted: set[str] = set()
    if search is None or add:
        wanted = {p.name for p in numeric if p.required} | ({"density"} & names)
        wanted -= set(fixed or {})
    for name in search or []:
        if name not in names:
            raise ConfigError(f"search space {space}: " + unknown(
                f"{method} parameter to search", name, sorted(names)))
        wanted.add(name)
    out = []
    for p in numeric:
        if p.name not in wanted:
            continue
        lo_hi = bounds.get(p.name)
        if lo_hi is None and p.meta.low is not None and p.meta.high is not None:
            lo_hi = (p.meta.low, p.meta.high)
        if lo_hi is None:
            raise ConfigError(f"search space {space}: give bounds for {method}'s {p.name} "
                              f"(bounds: {{{p.name}: [low, high]}})")
        lo, hi = float(lo_hi[0]), float(lo_hi[1])
        if lo > hi:
            raise ConfigError(f"search space {space}: bounds of {p.name} are reversed")
        p.validate(lo), p.validate(hi)  # the method's own range, one line if outside
        default = None if p.required or p.default is None else float(p.default)
        out.append(SearchedParam(p.name, p.meta.per_model, lo, hi, p.type is int, default))
    given = {p.name for p in out} | set(fixed or {})
    missing = sorted(p.name for p in m.params() if p.required and p.name not in given)
    if missing:
        raise ConfigError(f"search space {space}: {method} takes "
                          f"{', '.join(sorted(p.name for p in m.params()))} and this space "
                          f"does not set {', '.join(missing)}; merge it with a recipe "
                          "(evomerge merge), or search another method")
    if not out and not allow_empty:
        raise ConfigError(f"search space {space}: nothing to search for {method}; name its "
                          f"parameters, e.g. search: [{', '.join(sorted(names)) or '...'}] "
                          "with their bounds" if names else
                          f"search space {space}: {method} has no numeric parameters to "
                          "search; merge it with a recipe (evomerge merge), or search another "
                          "method")
    return out


def module_filters(filters: dict[str, list[str]] | None, model: str) -> dict[str, list[str]]:
    """The attention/MLP recipe filters for ``model``'s tensor names (io/naming decides)."""
    if filters is not None:
        return filters
    from evomerge.io.checkpoint import Checkpoint
    from evomerge.io.naming import group_filters

    return group_filters(Checkpoint(model).names())


class SpaceOptions(ComponentOptions):
    """The ``space:`` block of an evolve config; ``type`` names the space."""

    type: str


class RangeOptions(SpaceOptions):
    """Bounds of the usual merge parameters (one gene each per model, or per group)."""

    weight: tuple[float, float] = (0.0, 1.0)  # bounds of each weight gene
    density: tuple[float, float] = (0.1, 1.0)  # bounds of density (sparsifying methods)
    t: tuple[float, float] = (0.0, 1.0)  # bounds of SLERP's t
    grid: float | None = Field(default=None, gt=0)  # a discrete step for every gene
    parameters: dict[str, Any] = {}  # fixed method parameters added to every recipe
    # method parameters to search (default: the required ones, plus density when present)
    search: list[str] | None = None
    bounds: dict[str, tuple[float, float]] = {}  # bounds of any searched parameter

    def all_bounds(self) -> dict[str, tuple[float, float]]:
        """``bounds`` over the shorthands weight, density and t."""
        return {"weight": self.weight, "density": self.density, "t": self.t, **self.bounds}

    @model_validator(mode="after")
    def _bounds(self) -> RangeOptions:
        for name in ("weight", "density", "t"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} bounds [{lo}, {hi}] are reversed")
        for name in ("density", "t"):
            lo, hi = getattr(self, name)
            if lo < 0 or hi > 1:
                raise ValueError(f"{name} bounds [{lo}, {hi}] must lie within [0, 1]")
        return self


def with_data(recipe: dict[str, Any], data: dict[str, Any] | None) -> dict[str, Any]:
    """``recipe`` with the search's ``data:`` block when one of its methods needs
    statistics (regmean, fisher), so every recorded recipe merges again on its own."""
    from evomerge.merge.registry import get_method

    methods = {recipe["merge_method"], *(s.get("merge_method") for s in recipe.get("slices")
                                         or [] if s.get("merge_method"))}
    if data is not None and any(get_method(m).statistics for m in methods):
        return {**recipe, "data": data}
    return recipe


class SearchSpace(ABC):
    """Maps genomes (arrays within ``bounds``) to recipes and back.

    A space is registered under its config ``type`` (``@SPACES.register("name")``), declares
    its ``Options`` and builds itself from them with ``build``."""

    genes: list[Gene]
    data: dict[str, Any] | None = None  # set by build: the statistics data of recipes
    Options: ClassVar[type[SpaceOptions]] = SpaceOptions
    # the space's candidates stack the input models' layers (each model held as a module)
    stacks_models: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def build(cls, options: Any, inputs: SpaceInputs) -> SearchSpace:
        """The space for one job from its validated options."""

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


def short_name(path: str) -> str:
    """A model's label in gene names: the last part of its path."""
    return path.rstrip("/").split("/")[-1]


SPACES: Registry[type[SearchSpace]] = Registry("space", "evomerge.spaces")


def build_space(options: Any, inputs: SpaceInputs) -> SearchSpace:
    """The space named by ``options.type`` for one job; its recipes carry ``inputs.data``
    (data-dependent methods' statistics data)."""
    space = SPACES.get(options.type).build(options, inputs)
    space.data = inputs.data
    return space
