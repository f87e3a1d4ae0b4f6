"""The live merger equals the planner for every method, and skips unchanged tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evomerge.io.checkpoint import Checkpoint
from evomerge.merge.live import LiveMerger
from evomerge.merge.planner import MergePlan
from evomerge.recipe import load_recipe


@pytest.mark.parametrize("method, params, extra", [
    ("task_arithmetic", [{"weight": 0.7}, {"weight": [0.2, 1.3]}], {"lambda": 0.9}),
    ("linear", [{"weight": 0.3}, {"weight": 0.9}], {}),
    ("ties", [{"weight": 1.0, "density": 0.4}, {"weight": 0.5, "density": 0.6}], {}),
    ("dare_linear", [{"weight": 1.0, "density": 0.4}, {"weight": 0.5, "density": 0.6}], {}),
])
def test_live_merge_equals_planner(llama: list[Path], method: str, params: list[dict],
                                   extra: dict) -> None:
    from transformers import AutoModelForCausalLM

    base, ft1, ft2 = (str(p) for p in llama)
    recipe = load_recipe({"merge_method": method, "base_model": base,
                          "models": [{"model": ft1, "parameters": params[0]},
                                     {"model": ft2, "parameters": params[1]}],
                          "parameters": extra})
    sources = {m: Checkpoint(m) for m in recipe.referenced_models()}
    expected = MergePlan.build(recipe, sources, seed=3).merge_to_dict()
    for offload in (False, True):
        model = AutoModelForCausalLM.from_pretrained(base)
        merger = LiveMerger(model, sources, seed=3, offload=offload)
        merger.apply(recipe)
        state = model.state_dict()
        for name, tensor in expected.items():
            torch.testing.assert_close(state[name], tensor, rtol=1e-6, atol=1e-6)
        assert merger.last_rewritten == len(expected)
        merger.apply(recipe)  # same recipe again: nothing to rewrite
        assert merger.last_rewritten == 0


def test_only_changed_tensors_are_rewritten(llama: list[Path]) -> None:
    from transformers import AutoModelForCausalLM

    base, ft1, ft2 = (str(p) for p in llama)

    def recipe(attn_weight: float):
        w = [{"filter": "self_attn", "value": attn_weight}, {"value": 0.5}]
        return load_recipe({"merge_method": "task_arithmetic", "base_model": base,
                            "models": [{"model": ft1, "parameters": {"weight": w}},
                                       {"model": ft2, "parameters": {"weight": 0.5}}]})

    model = AutoModelForCausalLM.from_pretrained(base)
    merger = LiveMerger(model, {m: Checkpoint(m) for m in (base, ft1, ft2)})
    merger.apply(recipe(0.1))
    merger.apply(recipe(0.9))
    n_attn = sum(1 for k in model.state_dict() if "self_attn" in k)
    assert merger.last_rewritten == n_attn
    expected = MergePlan.build(recipe(0.9), {m: Checkpoint(m) for m in (base, ft1, ft2)}
                               ).merge_to_dict()
    for name, tensor in expected.items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=1e-6, atol=1e-6)


def test_switching_methods_and_a_bf16_live_model(llama: list[Path]) -> None:
    """Rows added for a new method keep earlier ones valid; a bf16 model gets the float32
    result rounded once."""
    from transformers import AutoModelForCausalLM

    base, ft1, ft2 = (str(p) for p in llama)
    sources = {m: Checkpoint(m) for m in (base, ft1, ft2)}

    def recipe(method: str, w: float):
        return load_recipe({"merge_method": method, "base_model": base,
                            "models": [{"model": ft1, "parameters": {"weight": w}},
                                       {"model": ft2, "parameters": {"weight": 1 - w}}]})

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    merger = LiveMerger(model, sources)
    for method, w in [("task_arithmetic", 0.3), ("linear", 0.8), ("task_arithmetic", 0.6)]:
        merger.apply(recipe(method, w))
        expected = MergePlan.build(recipe(method, w), sources).merge_to_dict()
        for name, tensor in expected.items():
            assert model.state_dict()[name].dtype == torch.bfloat16
            torch.testing.assert_close(model.state_dict()[name], tensor.to(torch.bfloat16),
                                       rtol=8e-3, atol=1e-6)  # at most one bf16 ulp


def _any_recipe(name: str, base: str, ft1: str, ft2: str) -> dict:
    """A valid recipe for any registered method: required parameters filled in."""
    from evomerge.merge.registry import get_method

    m = get_method(name)
    pair = m.max_models == 1 and m.base != "input"  # slerp-like: base and one other model
    models = [ft1] if m.max_models == 1 else [ft1, ft2]
    if m.base == "input" and m.max_models != 1:
        models.append(base)
    per_model = {p.name: 0.6 for p in m.per_model if p.required}
    shared = {p.name: 0.5 for p in m.shared if p.required}
    entries = [{"model": x, "parameters": dict(per_model)} for x in models]
    if pair:
        entries.insert(0, {"model": base})
    recipe: dict = {"merge_method": name, "models": entries, "parameters": shared}
    if m.statistics:  # data-dependent: a few zoo items (the family's tokenizer reads them)
        recipe["data"] = {"zoo": "add_en", "limit": 4}
    if m.base != "input":
        recipe["base_model"] = base
    return recipe


@pytest.mark.parametrize("name", sorted(
    __import__("evomerge.merge.registry", fromlist=["methods"]).methods()))
def test_every_method_merges_live_as_on_disk(llama: list[Path], name: str, tmp_path: Path
                                             ) -> None:
    """Each registered method runs on a real checkpoint family through the planner (the disk
    path) and the live merger, with the same tensors, all finite, some changed."""
    from transformers import AutoModelForCausalLM

    from evomerge.merge.statistics import for_recipe

    base, ft1, ft2 = (str(p) for p in llama)
    recipe = load_recipe(_any_recipe(name, base, ft1, ft2))
    sources = {m: Checkpoint(m) for m in recipe.referenced_models()}
    stats = for_recipe(recipe, tmp_path)
    expected = MergePlan.build(recipe, sources, seed=3, statistics=stats).merge_to_dict()
    model = AutoModelForCausalLM.from_pretrained(base)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    LiveMerger(model, sources, seed=3, statistics_dir=tmp_path).apply(recipe)
    state = model.state_dict()
    for key, tensor in expected.items():
        torch.testing.assert_close(state[key], tensor, rtol=1e-6, atol=1e-6)
        assert bool(torch.isfinite(tensor).all()), key
    assert any(not state[k].equal(before[k]) for k in expected)
