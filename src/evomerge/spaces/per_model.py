"""Per-model parameters of one merge method: the space of Mergenetic and MERGE3's baselines.

Genes: for each non-base model, the method's searched per-model parameters (by default
``weight``, and ``density`` for sparsifying methods), then its searched shared parameters
(SLERP's ``t``, or any named in ``search``: ``lambda``, ``select_topk``...). Weights of linear
merges are normalised by the method itself.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from evomerge.errors import ConfigError
from evomerge.merge.registry import get_method
from evomerge.recipe import MergeRecipe
from evomerge.spaces.base import (
    SPACES,
    RangeOptions,
    SearchSpace,
    SpaceInputs,
    searched_params,
    with_data,
)
from evomerge.spaces.base import short_name as _short


class PerModelOptions(RangeOptions):
    type: Literal["per_model"] = "per_model"


def pairs_with_base(method: str) -> bool:
    """Methods that merge the base with exactly one other model (slerp, nearswap...): the
    recipe lists the base as an input."""
    m = get_method(method)
    return m.max_models == 1 and m.base == "required"


@SPACES.register("per_model")
class PerModelSpace(SearchSpace):
    Options = PerModelOptions

    @classmethod
    def build(cls, options: PerModelOptions, inputs: SpaceInputs) -> PerModelSpace:
        return cls(inputs.method, inputs.models, inputs.base, grid=options.grid,
                   parameters=options.parameters, search=options.search,
                   bounds=options.all_bounds())

    def __init__(self, method: str, models: list[str], base: str | None = None,
                 weight: tuple[float, float] = (0.0, 1.0),
                 density: tuple[float, float] = (0.1, 1.0),
                 t: tuple[float, float] = (0.0, 1.0), grid: float | None = None,
                 parameters: dict[str, Any] | None = None, search: list[str] | None = None,
                 bounds: dict[str, tuple[float, float]] | None = None) -> None:
        m = get_method(method)
        if m.base == "required" and base is None:
            raise ConfigError(f"search space: {method} needs a base model")
        if pairs_with_base(method) and len(models) != 1:
            raise ConfigError(f"search space: {method} merges the base with exactly one model")
        self.method, self.models, self.base = method, list(models), base
        self.parameters = parameters or {}
        all_bounds = {"weight": weight, "density": density, "t": t, **(bounds or {})}
        self.searched = searched_params("per_model", method, search, all_bounds,
                                        self.parameters)
        self.per = [p for p in self.searched if p.per_model]
        self.shared = [p for p in self.searched if not p.per_model]
        self.genes = [p.gene(f"{_short(name)}.{p.name}", grid)
                      for name in self.models for p in self.per]
        self.genes += [p.gene(p.name, grid) for p in self.shared]

    def to_recipe(self, genome: np.ndarray) -> MergeRecipe:
        x = self.repair(genome)
        values = iter(float(v) for v in x)
        models: list[dict[str, Any]] = []
        for name in self.models:
            params = {p.name: next(values) for p in self.per}
            models.append({"model": name, **({"parameters": params} if params else {})})
        shared = {p.name: next(values) for p in self.shared}
        if pairs_with_base(self.method):
            models.insert(0, {"model": self.base})
        data: dict[str, Any] = {"merge_method": self.method, "models": models}
        if self.base and get_method(self.method).base != "input":
            data["base_model"] = self.base
        if self.parameters or shared:
            data["parameters"] = {**self.parameters, **shared}
        return MergeRecipe.model_validate(with_data(data, self.data))

    def endpoints(self) -> list[np.ndarray]:
        """Each input model itself where the method can return it: weight 1 on it and 0 on
        the others, density 1, other parameters at their defaults (exact for linear and the
        task-arithmetic family); SLERP-like methods: t = 0 (the base) and t = 1 (the model).
        Bounds that exclude it are noted (``notes``). Methods without weights: none."""
        if pairs_with_base(self.method) and [p.name for p in self.searched] == ["t"]:
            return [self._endpoint(np.array([0.0]), _short(self.base or "base")),
                    self._endpoint(np.array([1.0]), _short(self.models[0]))]
        if "weight" not in {p.name for p in self.per}:
            return []
        out = []
        for i, name in enumerate(self.models):
            x = [1.0 if j == i else 0.0 if p.name == "weight" else p.endpoint()
                 for j in range(len(self.models)) for p in self.per]
            x += [p.endpoint() for p in self.shared]
            out.append(self._endpoint(np.array(x), _short(name)))
        return out
