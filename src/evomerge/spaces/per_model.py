"""Per-model parameters of one merge method: the space of Mergenetic and MERGE3's baselines.

Genes, for each non-base model: ``weight`` (and ``density`` for sparsifying methods); for
SLERP a single ``t``. Weights of linear merges are normalised by the method itself.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

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
)
from evomerge.spaces.base import short_name as _short


class PerModelOptions(RangeOptions):
    type: Literal["per_model"] = "per_model"


@SPACES.register("per_model")
class PerModelSpace(SearchSpace):
    Options = PerModelOptions

    @classmethod
    def build(cls, options: PerModelOptions, inputs: SpaceInputs) -> PerModelSpace:
        return cls(inputs.method, inputs.models, inputs.base, weight=options.weight,
                   density=options.density, t=options.t, grid=options.grid,
                   parameters=options.parameters)

    def __init__(self, method: str, models: list[str], base: str | None = None,
                 weight: tuple[float, float] = (0.0, 1.0),
                 density: tuple[float, float] = (0.1, 1.0),
                 t: tuple[float, float] = (0.0, 1.0), grid: float | None = None,
                 parameters: dict[str, Any] | None = None) -> None:
        m = get_method(method)
        if m.base == "required" and base is None:
            raise ConfigError(f"search space: {method} needs a base model")
        self.method, self.models, self.base = method, list(models), base
        self.parameters = parameters or {}
        self.genes = []
        if method == "slerp":
            if len(self.models) != 1:
                raise ConfigError("search space: slerp merges the base with exactly one model")
            self.genes.append(Gene("t", *t, grid))
        else:
            for name in self.models:
                self.genes.append(Gene(f"{_short(name)}.weight", *weight, grid))
                if m.sparse:
                    self.genes.append(Gene(f"{_short(name)}.density", *density, grid))
        searched = {g.name.rsplit(".", 1)[-1] for g in self.genes}
        check_searchable("per_model", method, searched, self.parameters)
        for g in self.genes:
            if g.low > g.high:
                raise ConfigError(f"search space: bounds of {g.name} are reversed")

    def to_recipe(self, genome: np.ndarray) -> MergeRecipe:
        x = self.repair(genome)
        if self.method == "slerp":
            return MergeRecipe.model_validate({
                "merge_method": "slerp", "base_model": self.base,
                "models": [{"model": self.base}, {"model": self.models[0]}],
                "parameters": {"t": float(x[0]), **self.parameters}})
        per = 2 if get_method(self.method).sparse else 1
        models = []
        for i, name in enumerate(self.models):
            params = {"weight": float(x[i * per])}
            if per == 2:
                params["density"] = float(x[i * per + 1])
            models.append({"model": name, "parameters": params})
        data: dict[str, Any] = {"merge_method": self.method, "models": models}
        if self.base and get_method(self.method).base != "input":
            data["base_model"] = self.base
        if self.parameters:
            data["parameters"] = dict(self.parameters)
        return MergeRecipe.model_validate(data)

    def endpoints(self) -> list[np.ndarray]:
        """Each input model itself: weight 1 on it and 0 on the others, density 1 (SLERP:
        t = 0, the base, and t = 1, the model), whatever the bounds; bounds that exclude it
        are noted (``notes``)."""
        if self.method == "slerp":
            return [self._endpoint(np.array([0.0]), _short(self.base or "base")),
                    self._endpoint(np.array([1.0]), _short(self.models[0]))]
        per = 2 if get_method(self.method).sparse else 1
        out = []
        for i, name in enumerate(self.models):
            x = np.zeros(self.n_var)
            x[i * per] = 1.0
            if per == 2:
                x[1::2] = 1.0  # density 1: nothing dropped
            out.append(self._endpoint(x, _short(name)))
        return out

