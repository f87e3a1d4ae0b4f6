"""Layer-wise parameters: layers in groups of ``layer_granularity``, and within each group one
value per module kind (attention, MLP, other) and model, as in mergekit-evolve and MERGE3's
SLERP genome. The recipe is a list of slices, one per group, with ``{filter, value}`` entries.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from evomerge.errors import ConfigError
from evomerge.merge.registry import get_method
from evomerge.recipe import MergeRecipe
from evomerge.spaces.base import (
    SPACES,
    Gene,
    RangeOptions,
    SearchSpace,
    SpaceInputs,
    check_searchable,
    module_filters,
)
from evomerge.spaces.base import short_name as _short


class LayerwiseOptions(RangeOptions):
    type: Literal["layerwise"] = "layerwise"
    layer_granularity: int = Field(default=1, ge=1)  # layers per group
    # module groups with their own genes (io/naming decides what each holds)
    modules: list[Literal["attention", "mlp", "other"]] = ["attention", "mlp", "other"]


@SPACES.register("layerwise")
class LayerwiseSpace(SearchSpace):
    Options = LayerwiseOptions

    @classmethod
    def build(cls, options: LayerwiseOptions, inputs: SpaceInputs) -> LayerwiseSpace:
        return cls(inputs.method, inputs.models, inputs.base, inputs.num_layers,
                   options.layer_granularity, tuple(options.modules), weight=options.weight,
                   density=options.density, t=options.t, grid=options.grid,
                   parameters=options.parameters, filters=inputs.filters)

    def __init__(self, method: str, models: list[str], base: str | None, num_layers: int,
                 layer_granularity: int = 1, modules: tuple[str, ...] = ("attention", "mlp",
                                                                          "other"),
                 weight: tuple[float, float] = (0.0, 1.0),
                 density: tuple[float, float] = (0.1, 1.0), t: tuple[float, float] = (0.0, 1.0),
                 grid: float | None = None, parameters: dict[str, Any] | None = None,
                 filters: dict[str, list[str]] | None = None) -> None:
        m = get_method(method)
        if m.base == "required" and base is None:
            raise ConfigError(f"search space: {method} needs a base model")
        if layer_granularity < 1 or num_layers % layer_granularity:
            raise ConfigError(f"layer_granularity {layer_granularity} must divide the "
                              f"{num_layers} layers")
        unknown = set(modules) - {"attention", "mlp", "other"}
        if unknown:
            raise ConfigError(f"unknown module group {sorted(unknown)[0]!r} "
                              "(use attention, mlp, other)")
        self.method, self.models, self.base = method, list(models), base
        self.num_layers, self.granularity, self.modules = num_layers, layer_granularity, modules
        self.parameters = parameters or {}
        self.filters = module_filters(filters, base or models[0])
        self.groups = num_layers // layer_granularity
        self.per_model = ["t"] if method == "slerp" else (
            ["weight", "density"] if m.sparse else ["weight"])
        if method == "slerp" and len(self.models) != 1:
            raise ConfigError("search space: slerp merges the base with exactly one model")
        check_searchable("layerwise", method, set(self.per_model), self.parameters)
        ranges = {"weight": weight, "density": density, "t": t}
        self.genes = [Gene(f"g{g}.{mod}.{_short(model)}.{p}", *ranges[p], grid)
                      for g in range(self.groups) for mod in modules for model in self.models
                      for p in self.per_model]

    def _index(self, g: int, mod: int, model: int, p: int) -> int:
        return ((g * len(self.modules) + mod) * len(self.models) + model) * len(
            self.per_model) + p

    def _entries(self, x: np.ndarray, g: int, model: int, p: int) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        other = None
        for mod_i, mod in enumerate(self.modules):
            value = float(x[self._index(g, mod_i, model, p)])
            if mod == "other":
                other = value
                continue
            entries += [{"filter": f, "value": value} for f in self.filters[mod]]
        entries.append({"value": other if other is not None else 1.0})
        return entries

    def to_recipe(self, genome: np.ndarray) -> MergeRecipe:
        x = self.repair(genome)
        slices = []
        for g in range(self.groups):
            rng = [g * self.granularity, (g + 1) * self.granularity]
            sources: list[dict[str, Any]] = []
            shared: dict[str, Any] = dict(self.parameters)
            if self.method == "slerp":
                shared["t"] = self._entries(x, g, 0, 0)
                sources = [{"model": self.base, "layer_range": rng},
                           {"model": self.models[0], "layer_range": rng}]
            else:
                if self.base and get_method(self.method).base != "input":
                    sources.append({"model": self.base, "layer_range": rng})
                for mi, model in enumerate(self.models):
                    params = {p: self._entries(x, g, mi, pi) for pi, p in enumerate(self.per_model)}
                    sources.append({"model": model, "layer_range": rng, "parameters": params})
            slices.append({"sources": sources, **({"parameters": shared} if shared else {})})
        data: dict[str, Any] = {"merge_method": self.method, "slices": slices}
        if self.base and (get_method(self.method).base != "input" or self.method == "slerp"):
            data["base_model"] = self.base
        return MergeRecipe.model_validate(data)

    def endpoints(self) -> list[np.ndarray]:
        """Each input model itself in every group and module: weight 1 on it, 0 on the
        others, density and t 1; bounds that exclude it are noted (``notes``)."""
        out = []
        for mi, name in enumerate(self.models):
            x = np.zeros(self.n_var)
            for g in range(self.groups):
                for mod in range(len(self.modules)):
                    for m in range(len(self.models)):
                        for pi, p in enumerate(self.per_model):
                            value = 1.0 if p != "weight" or m == mi else 0.0
                            x[self._index(g, mod, m, pi)] = value
            out.append(self._endpoint(x, _short(name)))
        return out
