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
    RangeOptions,
    SearchedParam,
    SearchSpace,
    SpaceInputs,
    module_filters,
    searched_params,
    with_data,
)
from evomerge.spaces.base import short_name as _short
from evomerge.spaces.per_model import pairs_with_base


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
                   options.layer_granularity, tuple(options.modules), grid=options.grid,
                   parameters=options.parameters, filters=inputs.filters,
                   search=options.search, bounds=options.all_bounds())

    def __init__(self, method: str, models: list[str], base: str | None, num_layers: int,
                 layer_granularity: int = 1, modules: tuple[str, ...] = ("attention", "mlp",
                                                                          "other"),
                 weight: tuple[float, float] = (0.0, 1.0),
                 density: tuple[float, float] = (0.1, 1.0), t: tuple[float, float] = (0.0, 1.0),
                 grid: float | None = None, parameters: dict[str, Any] | None = None,
                 filters: dict[str, list[str]] | None = None, search: list[str] | None = None,
                 bounds: dict[str, tuple[float, float]] | None = None) -> None:
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
        if pairs_with_base(method) and len(models) != 1:
            raise ConfigError(f"search space: {method} merges the base with exactly one model")
        self.method, self.models, self.base = method, list(models), base
        self.num_layers, self.granularity, self.modules = num_layers, layer_granularity, modules
        self.parameters = parameters or {}
        self.filters = module_filters(filters, base or models[0])
        self.groups = num_layers // layer_granularity
        all_bounds = {"weight": weight, "density": density, "t": t, **(bounds or {})}
        searched = searched_params("layerwise", method, search, all_bounds, self.parameters)
        self.per = [p for p in searched if p.per_model]
        self.shared = [p for p in searched if not p.per_model]
        # per group and module: each model's per-model genes, then the shared ones
        self.genes = []
        self.owners: list[tuple[SearchedParam, int | None]] = []  # per gene: param, model
        for g in range(self.groups):
            for mod in modules:
                for mi, model in enumerate(self.models):
                    for p in self.per:
                        self.genes.append(p.gene(f"g{g}.{mod}.{_short(model)}.{p.name}", grid))
                        self.owners.append((p, mi))
                for p in self.shared:
                    self.genes.append(p.gene(f"g{g}.{mod}.{p.name}", grid))
                    self.owners.append((p, None))

    def _entries(self, x: np.ndarray, g: int, key: str) -> list[dict[str, Any]]:
        """{filter, value} entries of gene ``g{g}.<module>.{key}``, the rest last."""
        entries: list[dict[str, Any]] = []
        other = None
        for mod in self.modules:
            value = float(x[self.index[f"g{g}.{mod}.{key}"]])
            if mod == "other":
                other = value
                continue
            entries += [{"filter": f, "value": value} for f in self.filters[mod]]
        entries.append({"value": other if other is not None else 1.0})
        return entries

    def to_recipe(self, genome: np.ndarray) -> MergeRecipe:
        x = self.repair(genome)
        uses_base = get_method(self.method).base != "input"
        slices = []
        for g in range(self.groups):
            rng = [g * self.granularity, (g + 1) * self.granularity]
            sources: list[dict[str, Any]] = []
            shared: dict[str, Any] = dict(self.parameters)
            shared.update({p.name: self._entries(x, g, p.name) for p in self.shared})
            if self.base and uses_base:
                sources.append({"model": self.base, "layer_range": rng})
            for model in self.models:
                params = {p.name: self._entries(x, g, f"{_short(model)}.{p.name}")
                          for p in self.per}
                sources.append({"model": model, "layer_range": rng,
                                **({"parameters": params} if params else {})})
            slices.append({"sources": sources, **({"parameters": shared} if shared else {})})
        data: dict[str, Any] = {"merge_method": self.method, "slices": slices}
        if self.base and uses_base:
            data["base_model"] = self.base
        return MergeRecipe.model_validate(with_data(data, self.data))

    def endpoints(self) -> list[np.ndarray]:
        """Each input model itself in every group and module, where the method can return
        it: weight 1 on it, 0 on the others, density 1, other parameters at their defaults
        (SLERP-like methods: t = 0 and t = 1); bounds that exclude it are noted."""
        names = {p.name for p in self.per}
        if pairs_with_base(self.method) and [p.name for p in self.shared] == ["t"] \
                and not names:
            return [self._endpoint(np.full(self.n_var, v), label) for v, label in
                    ((0.0, _short(self.base or "base")), (1.0, _short(self.models[0])))]
        if "weight" not in names:
            return []
        return [self._endpoint(np.array([
            (1.0 if mi == i else 0.0) if p.name == "weight" else p.endpoint()
            for p, mi in self.owners]), _short(name)) for i, name in enumerate(self.models)]
