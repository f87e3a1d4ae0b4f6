"""What a search must beat: the input models themselves and the recipes people set by hand
(task arithmetic with weights 1, TIES at density 0.5, the plain average, SLERP halfway for two
models). Every run scores them on the same validation and test items as its own candidates,
and never returns something worse on validation than the best of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evomerge.recipe import MergeRecipe


def model_recipe(model: str) -> MergeRecipe:
    """The recipe that reproduces one input model unchanged (an endpoint)."""
    return MergeRecipe.model_validate({"merge_method": "passthrough",
                                       "models": [{"model": model}]})


def input_recipes(base: str, models: list[str]) -> dict[str, MergeRecipe]:
    """The base and each model, by the labels reports use (base, the models' folder names)."""
    return {"base": model_recipe(base), **{Path(m).name: model_recipe(m) for m in models}}


def hand_set_recipes(base: str, models: list[str]) -> dict[str, MergeRecipe]:
    """The usual hand-set merges of ``models`` over ``base``. TIES keeps mergekit's
    ``normalize: false`` reading of "weights 1" (with normalize the zoo's TIES 0.5 scores 12 %
    instead of 22 %, docs/zoo.md)."""
    each = [{"model": m, "parameters": {"weight": 1.0}} for m in models]
    out: dict[str, dict[str, Any]] = {
        "task_arithmetic 1/1": {"merge_method": "task_arithmetic", "base_model": base,
                                "models": each},
        "ties 0.5": {"merge_method": "ties", "base_model": base,
                     "parameters": {"normalize": False},
                     "models": [{"model": m, "parameters": {"weight": 1.0, "density": 0.5}}
                                for m in models]},
    }
    if len(models) >= 2:
        out["average"] = {"merge_method": "linear", "models": each}
    if len(models) == 2:
        out["slerp 0.5"] = {"merge_method": "slerp", "base_model": models[0],
                            "parameters": {"t": 0.5},
                            "models": [{"model": models[0]}, {"model": models[1]}]}
    return {label: MergeRecipe.model_validate(r) for label, r in out.items()}
