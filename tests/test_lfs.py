"""The LFS space: per layer group a merge method and its per-subset parameters, as one
slices recipe with a method per slice; numerically equal to the single-method merges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from evomerge.io.checkpoint import Checkpoint
from evomerge.merge.planner import MergePlan
from evomerge.recipe import load_recipe
from evomerge.spaces import LFSSpace
from evomerge.spaces.lfs import METHODS


def merged(recipe) -> dict[str, torch.Tensor]:  # noqa: ANN001
    return MergePlan.build(recipe, {m: Checkpoint(m) for m in recipe.referenced_models()}
                           ).merge_to_dict()


def test_lfs_genome_is_the_per_group_methods(llama: list[Path]) -> None:
    base, ft1, ft2 = (str(p) for p in llama)
    space = LFSSpace([ft1, ft2], base, num_layers=4, layer_granularity=2)
    assert space.n_var == 2 * (1 + 3 * (2 + 2 + 3 + 2))
    rng = np.random.default_rng(0)
    x = space.repair(rng.uniform(*space.bounds))
    x[space.index["g0.method"]] = METHODS.index("ties")
    x[space.index["g1.method"]] = METHODS.index("slerp")
    out = merged(space.to_recipe(x))

    def v(name: str) -> float:
        return space.value(x, name)

    def per_subset(key: str) -> list[dict]:
        return [{"filter": "self_attn", "value": v(f"g0.attention.{key}")},
                {"filter": "attn.", "value": v(f"g0.attention.{key}")},
                {"filter": "mlp", "value": v(f"g0.mlp.{key}")},
                {"value": v(f"g0.other.{key}")}]

    ties = merged(load_recipe({
        "merge_method": "ties", "base_model": base,
        "models": [{"model": m, "parameters": {"weight": per_subset(f"ties.{Path(m).name}"),
                                               "density": per_subset("ties.density")}}
                   for m in (ft1, ft2)]}))
    # group 1 (layers 2-3) by slerp between the two models with the highest values
    vals = {m: sum(v(f"g1.{s}.slerp.{Path(m).name}") for s in ("attention", "mlp", "other"))
            for m in (ft1, ft2)}
    first, second = sorted((ft1, ft2), key=lambda m: -vals[m])

    def t(sub: str) -> float:
        a, b = (v(f"g1.{sub}.slerp.{Path(m).name}") for m in (first, second))
        return b / (a + b)

    slerp = merged(load_recipe({
        "merge_method": "slerp", "base_model": first,
        "models": [{"model": first}, {"model": second}],
        "parameters": {"t": [{"filter": "self_attn", "value": t("attention")},
                             {"filter": "mlp", "value": t("mlp")}, {"value": t("other")}]}}))
    n_checked = 0
    for name, tensor in out.items():
        if ".layers.0." in name or ".layers.1." in name:
            torch.testing.assert_close(tensor, ties[name], rtol=1e-6, atol=1e-6)
            n_checked += 1
        elif ".layers.2." in name or ".layers.3." in name:
            torch.testing.assert_close(tensor, slerp[name], rtol=1e-6, atol=1e-6)
            n_checked += 1
    assert n_checked == sum(".layers." in k for k in out)


def test_lfs_endpoints_reproduce_each_model_and_methods_are_integers(llama: list[Path]
                                                                     ) -> None:
    base, ft1, ft2 = (str(p) for p in llama)
    space = LFSSpace([ft1, ft2], base, num_layers=4, layer_granularity=1)
    for genome, model in zip(space.endpoints(), (ft1, ft2), strict=True):
        out = merged(space.to_recipe(genome))
        ck = Checkpoint(model)
        for name, tensor in out.items():
            torch.testing.assert_close(tensor, ck.get(name).to(tensor.dtype))
    x = space.repair(np.full(space.n_var, 1.6))
    assert x[space.index["g0.method"]] == 2.0  # a categorical gene snaps to an index
    gene = space.genes[space.index["g3.mlp.ties.density"]]
    assert gene.active == ("g3.method", METHODS.index("ties"))


def test_lfs_takes_any_registered_method_as_a_category(llama: list[Path]) -> None:
    import pytest

    from evomerge.errors import ConfigError

    base, ft1, ft2 = (str(p) for p in llama)
    space = LFSSpace([ft1, ft2], base, num_layers=4, layer_granularity=2,
                     methods=("linear", "tsv", "ties", "iso_c", "della"), search=["lambda"],
                     bounds={"lambda": (0.5, 1.5)})
    names = {g.name for g in space.genes}
    assert {"g0.mlp.tsv.lambda", "g1.other.iso_c.lambda", "g0.attention.ties.density",
            "g0.mlp.della.lambda", "g0.mlp.della.ft1", "g0.mlp.della.density.ft2"} <= names
    assert space.genes[space.index["g0.mlp.tsv.lambda"]].active == ("g0.method", 1)
    x = space.repair(np.full(space.n_var, 0.5))
    x[space.index["g0.method"]] = 1  # tsv
    x[space.index["g1.method"]] = 3  # iso_c
    for sub in ("attention", "mlp", "other"):
        x[space.index[f"g0.{sub}.tsv.lambda"]] = 1.2
        x[space.index[f"g1.{sub}.iso_c.lambda"]] = 0.8
    out = merged(space.to_recipe(x))
    refs = {m: merged(load_recipe({"merge_method": m, "base_model": base,
                                   "models": [{"model": ft1}, {"model": ft2}],
                                   "parameters": {"lambda": lam}}))
            for m, lam in (("tsv", 1.2), ("iso_c", 0.8))}
    n = 0
    for name, tensor in out.items():
        for layers, ref in ((("0", "1"), refs["tsv"]), (("2", "3"), refs["iso_c"])):
            if any(f".layers.{i}." in name for i in layers):
                torch.testing.assert_close(tensor, ref[name], rtol=1e-6, atol=1e-6)
                n += 1
    assert n == sum(".layers." in k for k in out)
    assert len(space.endpoints()) == 2
    plain = LFSSpace([ft1, ft2], base, 4, 2, methods=("linear", "karcher"))
    assert plain.other == {"karcher": []}  # a category without genes: its defaults
    assert not any(".karcher." in g.name for g in plain.genes)
    with pytest.raises(ConfigError, match="cannot use nearswap: it does not merge 2 models"):
        LFSSpace([ft1, ft2], base, 4, 2, methods=("linear", "nearswap"))
    with pytest.raises(ConfigError, match="unknown merge method 'tvs'"):
        LFSSpace([ft1, ft2], base, 4, 2, methods=("linear", "tvs"))
    with pytest.raises(ConfigError, match="unknown parameter to search .*'lamda' "
                                          ".*did you mean 'lambda'"):
        LFSSpace([ft1, ft2], base, 4, 2, methods=("linear", "tsv"), search=["lamda"])
