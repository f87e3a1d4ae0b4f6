"""Endpoints of the per-model and layer-wise spaces are the input models themselves,
whatever the bounds (issue 14, point 3); bounds that exclude them are said once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evomerge.io.checkpoint import Checkpoint
from evomerge.merge.planner import MergePlan
from evomerge.spaces import LayerwiseSpace, PerModelSpace


def merged(recipe) -> dict[str, torch.Tensor]:  # noqa: ANN001
    sources = {m: Checkpoint(m) for m in recipe.referenced_models()}
    return MergePlan.build(recipe, sources).merge_to_dict()


@pytest.mark.parametrize("method", ["task_arithmetic", "linear", "ties", "dare_linear"])
@pytest.mark.parametrize("kind", ["per_model", "layerwise"])
def test_endpoints_merge_to_the_input_models_with_wide_bounds(
        llama: list[Path], method: str, kind: str) -> None:
    base, ft1, ft2 = (str(p) for p in llama)
    if kind == "per_model":
        space = PerModelSpace(method, [ft1, ft2], base, weight=(0.0, 2.0))
    else:
        space = LayerwiseSpace(method, [ft1, ft2], base, 4, 2, ("attention", "mlp", "other"),
                               weight=(0.0, 2.0))
    for genome, model in zip(space.endpoints(), (ft1, ft2), strict=True):
        out = merged(space.to_recipe(genome))
        ck = Checkpoint(model)
        for name, tensor in out.items():
            torch.testing.assert_close(tensor, ck.get(name).to(tensor.dtype), rtol=1e-5,
                                       atol=1e-6)
    assert space.notes == []


def test_slerp_endpoints_are_the_base_and_the_model(llama: list[Path]) -> None:
    base, ft1, _ = (str(p) for p in llama)
    space = PerModelSpace("slerp", [ft1], base)
    for genome, model in zip(space.endpoints(), (base, ft1), strict=True):
        out = merged(space.to_recipe(genome))
        ck = Checkpoint(model)
        for name, tensor in out.items():
            torch.testing.assert_close(tensor, ck.get(name).to(tensor.dtype))


def test_bounds_that_exclude_an_input_are_said_once(llama: list[Path]) -> None:
    base, ft1, ft2 = (str(p) for p in llama)
    space = PerModelSpace("task_arithmetic", [ft1, ft2], base, weight=(0.2, 0.8))
    ends = space.endpoints()
    space.endpoints()  # asked again: still one note per model
    assert [e.tolist() for e in ends] == [[0.8, 0.2], [0.2, 0.8]]
    assert len(space.notes) == 2
    assert all("exclude the input model" in n for n in space.notes)


@pytest.mark.parametrize("space", ["per_model", "layerwise"])
@pytest.mark.parametrize("method, message", [
    ("nearswap", "nearswap takes t and this space sets weight"),
    ("model_stock", "model_stock takes filter_wise and this space sets weight"),
])
def test_a_method_the_space_cannot_search_is_one_line_up_front(space: str, method: str,
                                                               message: str) -> None:
    """Before: the space wrote weights the method ignores (model_stock) or refuses."""
    from evomerge.errors import ConfigError
    from evomerge.spaces import SPACES, SpaceInputs
    from evomerge.zoo.manifest import ZOO_DIR

    cls = SPACES.get(space)
    with pytest.raises(ConfigError, match=message):
        cls.build(cls.Options(type=space), SpaceInputs(
            method, [str(ZOO_DIR / "math_en")], str(ZOO_DIR / "base"), 2))
