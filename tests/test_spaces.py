"""Endpoints of the per-model and layer-wise spaces are the input models themselves,
whatever the bounds (issue 14, point 3); bounds that exclude them are said once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
@pytest.mark.parametrize("method, options, message", [
    ("model_stock", {}, "model_stock has no numeric parameters to search"),
    ("tsv", {}, r"nothing to search for tsv; name its parameters, e\.g\. search: \[lambda\]"),
    ("tsv", {"search": ["lambda"]}, r"give bounds for tsv's lambda \(bounds: \{lambda"),
    ("ties", {"search": ["densty"]}, "unknown ties parameter to search 'densty' "
                                     "\\(did you mean 'density'"),
    ("ties", {"search": ["weight", "density"], "bounds": {"density": [0, 1.5]}},
     r"density=1.5 is out of range \[0.0, 1.0\]"),
    ("ties", {"search": ["lambda"], "bounds": {"lambda": [0.5, 2]}},
     r"ties takes .* and this space does not set weight"),
])
def test_a_method_the_space_cannot_search_is_one_line_up_front(space: str, method: str,
                                                               options: dict,
                                                               message: str) -> None:
    """Before any work: no silent genes a method ignores, no unbounded genes."""
    from evomerge.errors import ConfigError
    from evomerge.spaces import SPACES, SpaceInputs
    from evomerge.zoo.manifest import ZOO_DIR

    cls = SPACES.get(space)
    with pytest.raises(ConfigError, match=message):
        cls.build(cls.Options(type=space, **options), SpaceInputs(
            method, [str(ZOO_DIR / "math_en"), str(ZOO_DIR / "lang_it")],
            str(ZOO_DIR / "base"), 2))


def _search_everything(name: str) -> tuple[list[str], dict[str, tuple[float, float]]]:
    """Every numeric parameter of a method, with bounds valid for it."""
    from evomerge.merge.registry import get_method

    special = {"epsilon": (0.01, 0.05), "density": (0.3, 0.7), "eps": (1e-8, 1e-6),
               "tol": (1e-6, 1e-4), "lr": (1e-4, 1e-3), "k": (1, 2), "t": (0.2, 0.8)}
    names, bounds = [], {}
    for p in get_method(name).params():
        if p.type not in (int, float):
            continue
        names.append(p.name)
        lo = p.meta.low if p.meta.low is not None else 0.5
        hi = p.meta.high if p.meta.high is not None else lo + 1.0
        bounds[p.name] = special.get(p.name, (1, 3) if p.type is int else (lo, hi))
    return names, bounds


def _all_methods() -> list[str]:
    from evomerge.merge.registry import methods

    return sorted(methods())


@pytest.mark.parametrize("name", _all_methods())
def test_every_method_searches_its_parameters_as_genes(llama: list[Path], name: str,
                                                       tmp_path: Path) -> None:
    """Each registered method's numeric parameters become genes of the per-model and
    layer-wise spaces; random genomes give recipes that merge a real checkpoint family, and
    each gene's value lands in the recipe."""
    from evomerge.errors import ConfigError
    from evomerge.merge.registry import get_method
    from evomerge.merge.statistics import for_recipe
    from evomerge.spaces.per_model import pairs_with_base

    base, ft1, ft2 = (str(p) for p in llama)
    m = get_method(name)
    models = [ft1] if m.max_models == 1 else [ft1, ft2]
    search, bounds = _search_everything(name)
    if not search:
        with pytest.raises(ConfigError, match="no numeric parameters"):
            PerModelSpace(name, models, base, search=search, bounds=bounds)
        return
    rng = np.random.default_rng(0)
    for space in (PerModelSpace(name, models, base, search=search, bounds=bounds),
                  LayerwiseSpace(name, models, base, 4, 2, search=search, bounds=bounds)):
        space.data = {"zoo": "add_en", "limit": 4}  # used by data-dependent methods only
        per_genome = len(space.genes) // (1 if isinstance(space, PerModelSpace) else 2 * 3)
        per_model = [p for p in m.per_model if p.name in search]
        shared = [p for p in m.shared if p.name in search]
        assert per_genome == len(models) * len(per_model) + len(shared)
        lo, hi = space.bounds
        genome = space.repair(lo + rng.random(len(lo)) * (hi - lo))
        recipe = space.to_recipe(genome)
        sources = {x: Checkpoint(x) for x in recipe.referenced_models()}
        assert (recipe.data is not None) == (m.statistics is not None)
        merged = MergePlan.build(recipe, sources, seed=1,
                                 statistics=for_recipe(recipe, tmp_path)).merge_to_dict()
        assert all(bool(torch.isfinite(t).all()) for t in merged.values())
        # the first gene's value is in the recipe (integers really are integers)
        first = space.genes[0]
        dumped = recipe.model_dump_json()
        value = genome[0]
        if any(p.type is int and first.name.endswith(p.name) for p in m.params()):
            assert value == int(value)
        assert repr(float(value))[:6] in dumped, (first.name, value)
        if pairs_with_base(name):
            assert base in dumped


def test_lambda_and_a_shared_parameter_are_genes_of_tsv_and_sce(llama: list[Path]) -> None:
    base, ft1, ft2 = (str(p) for p in llama)
    space = PerModelSpace("tsv", [ft1, ft2], base, search=["lambda"],
                          bounds={"lambda": (0.5, 2.0)})
    assert [g.name for g in space.genes] == ["lambda"]
    assert space.endpoints() == []  # no weights: TSV cannot return one input model
    assert space.to_recipe(np.array([1.25])).parameters == {"lambda": 1.25}
    space = LayerwiseSpace("sce", [ft1, ft2], base, 4, 4, ("mlp", "other"),
                           search=["select_topk"])  # bounds from the parameter's own [0, 1]
    assert [g.name for g in space.genes] == ["g0.mlp.select_topk", "g0.other.select_topk"]
    recipe = space.to_recipe(np.array([0.3, 0.9]))
    entries = recipe.slices[0].parameters["select_topk"]
    assert entries[-1] == {"value": 0.9} or entries[-1].value == 0.9
