"""The merge planner: layer stacking (passthrough slices) and in-memory merging into a live
model, each against the disk merge or the input tensors themselves."""

from __future__ import annotations

from pathlib import Path

import torch

from evomerge.recipe import load_recipe

from .helpers import load_model_tensors
from .test_cli import ties_recipe


def test_layer_stacking_maps_layers_and_updates_config(
        families: dict[str, list[Path]], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from evomerge import merge

    base, ft1, _ = families["qwen2"]
    recipe = {"merge_method": "passthrough",
              "slices": [{"sources": [{"model": str(base), "layer_range": [0, 3]}]},
                         {"sources": [{"model": str(ft1), "layer_range": [1, 4]}]}]}
    out = merge(recipe, tmp_path / "stacked")
    merged = load_model_tensors(out)
    a, b = load_model_tensors(base), load_model_tensors(ft1)
    for j, (src, layer) in enumerate([(a, 0), (a, 1), (a, 2), (b, 1), (b, 2), (b, 3)]):
        name = f"model.layers.{j}.mlp.up_proj.weight"
        assert torch.equal(merged[name], src[f"model.layers.{layer}.mlp.up_proj.weight"])
    assert torch.equal(merged["model.embed_tokens.weight"], a["model.embed_tokens.weight"])
    assert torch.equal(merged["lm_head.weight"], b["lm_head.weight"])
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 6 and len(model.config.layer_types) == 6
    assert torch.isfinite(model(torch.tensor([[1, 5, 9]])).logits).all()


def test_in_memory_merge_equals_disk_merge(llama: list[Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from evomerge.io.checkpoint import Checkpoint, TensorDictSource
    from evomerge.merge.planner import MergePlan

    recipe = load_recipe(ties_recipe(*llama))
    disk = load_model_tensors(__import__("evomerge").merge(recipe, tmp_path / "disk"))
    # sources held in memory (state dicts), merged straight into a live model
    sources = {m: TensorDictSource(load_model_tensors(Path(m)), m, Checkpoint(m).config)
               for m in recipe.referenced_models()}
    model = AutoModelForCausalLM.from_pretrained(llama[0])
    plan = MergePlan.build(recipe, sources)
    plan.merge_into(model)
    live = model.state_dict()
    for name, tensor in disk.items():
        assert torch.equal(live[name], tensor), name
    assert set(plan.merge_to_dict()) == set(disk)
