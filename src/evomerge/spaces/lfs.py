"""Layer-wise fusion search (LFS, "Fine, I'll Merge It Myself"): layers in groups of
``layer_granularity``; per group a merge method chosen from {linear, task_arithmetic, ties,
slerp} and, per group and per parameter subset (attention, MLP, other), that method's
continuous parameters:

- linear: one weight per model (normalised by the method);
- task_arithmetic: one scale per model's task vector;
- ties: a density (1 - trim rate) and one scale per model;
- slerp: one value per model; the two models with the highest values (summed over the
  subsets) are interpolated, with t = v_second / (v_first + v_second) per subset.

``methods`` adds any other registered method that merges all the models as a category
(``tsv``, ``iso_c``, ``della``, ``wudi``...): per subset, its searched parameters (required ones,
density, and those named in ``search``, with ``bounds``), as in the per-model space.

The method is a categorical gene (an index, repaired to an integer) and every continuous gene
is conditional on its group's method (``Gene.active``), so SMAC sees a conditional
configuration space and pymoo a plain box. A genome becomes a slices recipe with one slice
per group, each with its own ``merge_method``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from evomerge.errors import ConfigError
from evomerge.recipe import MergeRecipe
from evomerge.spaces.base import (
    SPACES,
    Gene,
    SearchedParam,
    SearchSpace,
    SpaceInputs,
    SpaceOptions,
    module_filters,
    searched_params,
    with_data,
)
from evomerge.spaces.base import short_name as _short

METHODS = ("linear", "task_arithmetic", "ties", "slerp")  # LFS's own four, genes as above
SUBSETS = ("attention", "mlp", "other")


class LFSOptions(SpaceOptions):
    type: Literal["lfs"] = "lfs"
    layer_granularity: int = Field(default=1, ge=1)  # layers per group (each group picks a method)
    weight: tuple[float, float] = (0.0, 1.0)  # linear weights and task-vector scales
    density: tuple[float, float] = (0.1, 1.0)  # ties
    # the categories: LFS's four and any other registered method
    methods: list[str] = list(METHODS)
    # parameters of the other methods searched besides their required ones and density
    search: list[str] | None = None
    bounds: dict[str, tuple[float, float]] = {}  # bounds of those parameters

    @model_validator(mode="after")
    def _bounds(self) -> LFSOptions:
        for name, (lo, hi) in (("weight", self.weight), ("density", self.density)):
            if lo > hi:
                raise ValueError(f"{name} bounds [{lo}, {hi}] are reversed")
        if self.density[0] < 0 or self.density[1] > 1:
            raise ValueError(f"density bounds {list(self.density)} must lie within [0, 1]")
        return self


@SPACES.register("lfs")
class LFSSpace(SearchSpace):
    Options = LFSOptions

    @classmethod
    def build(cls, options: LFSOptions, inputs: SpaceInputs) -> LFSSpace:
        return cls(inputs.models, inputs.base, inputs.num_layers, options.layer_granularity,
                   weight=options.weight, density=options.density, filters=inputs.filters,
                   methods=tuple(options.methods), search=options.search,
                   bounds=options.bounds)

    def __init__(self, models: list[str], base: str, num_layers: int,
                 layer_granularity: int = 1, weight: tuple[float, float] = (0.0, 1.0),
                 density: tuple[float, float] = (0.1, 1.0),
                 filters: dict[str, list[str]] | None = None,
                 methods: tuple[str, ...] = METHODS, search: list[str] | None = None,
                 bounds: dict[str, tuple[float, float]] | None = None) -> None:
        if layer_granularity < 1 or num_layers % layer_granularity:
            raise ConfigError(f"layer_granularity {layer_granularity} must divide the "
                              f"{num_layers} layers")
        if len(models) < 2:
            raise ConfigError("the lfs space merges at least two models")
        self.models, self.base = list(models), base
        self.methods = tuple(methods)
        self.filters = module_filters(filters, base)
        self.granularity = layer_granularity
        self.groups = num_layers // layer_granularity
        self.other = self._other_methods(weight, density, search, bounds or {})
        self.genes: list[Gene] = []
        short = [_short(m) for m in self.models]
        for g in range(self.groups):
            method = f"g{g}.method"
            self.genes.append(Gene(method, 0, len(self.methods) - 1, 1, choices=self.methods))
            for sub in SUBSETS:
                for k, name in enumerate(self.methods):
                    cond = (method, k)
                    if name in self.other:
                        self.genes += [p.gene(self._key(g, sub, name, p.name, m), None, cond)
                                       for p in self.other[name]
                                       for m in (short if p.per_model else [None])]
                        continue
                    if name == "ties":
                        self.genes.append(Gene(f"g{g}.{sub}.ties.density", *density, active=cond))
                    bounds = (0.0, 1.0) if name in ("linear", "slerp") else weight
                    for m in short:
                        self.genes.append(Gene(f"g{g}.{sub}.{name}.{m}", *bounds, active=cond))

    @staticmethod
    def _key(g: int, sub: str, method: str, param: str, model: str | None) -> str:
        return f"g{g}.{sub}.{LFSSpace._suffix(method, param, model)}"

    @staticmethod
    def _suffix(method: str, param: str, model: str | None) -> str:
        """Gene name (after group and subset) of another method's parameter; weights keep
        LFS's own naming, ``<method>.<model>``."""
        if param == "weight" and model is not None:
            return f"{method}.{model}"
        return f"{method}.{param}" + (f".{model}" if model is not None else "")

    def _other_methods(self, weight: tuple[float, float], density: tuple[float, float],
                       search: list[str] | None, bounds: dict[str, tuple[float, float]]
                       ) -> dict[str, list[SearchedParam]]:
        """The searched parameters of each category beyond LFS's own four."""
        from evomerge.merge.registry import get_method

        if not self.methods:
            raise ConfigError("the lfs space needs at least one method")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError("the lfs space lists a method twice")
        out: dict[str, list[SearchedParam]] = {}
        taken: set[str] = set()
        for name in self.methods:
            if name in METHODS:
                continue
            m = get_method(name)
            n = len(self.models)
            if n < m.min_models or (m.max_models is not None and n > m.max_models):
                raise ConfigError(f"the lfs space cannot use {name}: it does not merge "
                                  f"{n} models at once")
            takes = {p.name for p in m.params()}
            taken |= takes
            wanted = [x for x in search or [] if x in takes]
            # a category may have no genes: the method with its defaults
            out[name] = searched_params("lfs", name, wanted,
                                        {"weight": weight, "density": density, **bounds},
                                        add=True, allow_empty=True)
        from evomerge.registry import unknown

        for x in search or []:
            if x not in taken:
                raise ConfigError("search space lfs: " + unknown(
                    "parameter to search (of the methods beyond LFS's four)", x, sorted(taken)))
        return out

    def value(self, x: np.ndarray, name: str) -> float:
        return float(x[self.index[name]])

    def method_of(self, x: np.ndarray, group: int) -> str:
        return self.methods[int(round(self.value(x, f"g{group}.method")))]

    def _per_subset(self, x: np.ndarray, g: int, key: str) -> list[dict[str, Any]]:
        """{filter, value} entries: attention and MLP filters, then the rest."""
        entries: list[dict[str, Any]] = []
        for sub in ("attention", "mlp"):
            v = self.value(x, f"g{g}.{sub}.{key}")
            entries += [{"filter": f, "value": v} for f in self.filters[sub]]
        return entries + [{"value": self.value(x, f"g{g}.other.{key}")}]

    def to_recipe(self, genome: np.ndarray) -> MergeRecipe:
        x = self.repair(genome)
        short = [_short(m) for m in self.models]
        slices = []
        for g in range(self.groups):
            rng = [g * self.granularity, (g + 1) * self.granularity]
            method = self.method_of(x, g)
            sl: dict[str, Any] = {"merge_method": method}
            if method in self.other:
                self._generic_slice(x, g, method, rng, sl)
            elif method == "slerp":
                totals = [sum(self.value(x, f"g{g}.{s}.slerp.{m}") for s in SUBSETS)
                          for m in short]
                first, second = np.argsort(-np.array(totals), kind="stable")[:2]
                t = []
                for sub in SUBSETS:
                    a = self.value(x, f"g{g}.{sub}.slerp.{short[first]}")
                    b = self.value(x, f"g{g}.{sub}.slerp.{short[second]}")
                    t.append(b / (a + b) if a + b > 0 else 0.5)
                entries: list[dict[str, Any]] = []
                for sub, v in zip(SUBSETS[:2], t[:2], strict=True):
                    entries += [{"filter": f, "value": v} for f in self.filters[sub]]
                entries.append({"value": t[2]})
                sl.update(base_model=self.models[first], parameters={"t": entries},
                          sources=[{"model": self.models[first], "layer_range": rng},
                                   {"model": self.models[second], "layer_range": rng}])
            else:
                sources: list[dict[str, Any]] = []
                if method != "linear":
                    sources.append({"model": self.base, "layer_range": rng})
                    sl["base_model"] = self.base
                for model, m in zip(self.models, short, strict=True):
                    params = {"weight": self._per_subset(x, g, f"{method}.{m}")}
                    if method == "ties":
                        params["density"] = self._per_subset(x, g, "ties.density")
                    sources.append({"model": model, "layer_range": rng, "parameters": params})
                sl["sources"] = sources
            slices.append(sl)
        return MergeRecipe.model_validate(with_data({"merge_method": "linear",
                                                     "slices": slices}, self.data))

    def _generic_slice(self, x: np.ndarray, g: int, method: str, rng: list[int],
                       sl: dict[str, Any]) -> None:
        """A slice merging all models by another registered method."""
        from evomerge.merge.registry import get_method

        searched = self.other[method]
        sources: list[dict[str, Any]] = []
        if get_method(method).base != "input":
            sources.append({"model": self.base, "layer_range": rng})
            sl["base_model"] = self.base
        for model in self.models:
            params = {p.name: self._per_subset(x, g, self._suffix(method, p.name,
                                                                   _short(model)))
                      for p in searched if p.per_model}
            sources.append({"model": model, "layer_range": rng,
                            **({"parameters": params} if params else {})})
        shared = {p.name: self._per_subset(x, g, self._suffix(method, p.name, None))
                  for p in searched if not p.per_model}
        if shared:
            sl["parameters"] = shared
        sl["sources"] = sources

    def endpoints(self) -> list[np.ndarray]:
        """Linear merges with all weight on one model, in every group: that model exactly
        (none when ``linear`` is not among the methods)."""
        if "linear" not in self.methods:
            return []
        out = []
        for i in range(len(self.models)):
            x = np.array([(g.low + g.high) / 2 for g in self.genes])
            for g in range(self.groups):
                x[self.index[f"g{g}.method"]] = self.methods.index("linear")
                for sub in SUBSETS:
                    for j, other in enumerate(_short(y) for y in self.models):
                        x[self.index[f"g{g}.{sub}.linear.{other}"]] = 1.0 if j == i else 0.0
            out.append(self.repair(x))
        return out
