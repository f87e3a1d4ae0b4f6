"""Every architecture in docs/merge.md's table, on a tiny real checkpoint: the module groups the
layer-wise and LFS spaces use, a merge that follows them tensor by tensor, the output loading
and generating, mergekit's result where mergekit handles the architecture, and the live merge
of a search."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from evomerge.io.checkpoint import Checkpoint
from evomerge.io.hf import live_names
from evomerge.io.naming import classify, group_filters
from evomerge.merge.disk import merge_to_disk
from evomerge.merge.live import LiveMerger
from evomerge.merge.planner import MergePlan
from evomerge.spaces.layerwise import LayerwiseSpace
from evomerge.zoo.tiny import ARCHITECTURES

from .helpers import assert_same_tensors, load_model_tensors, run_evomerge, run_mergekit

# the filters the spaces write for each architecture (docs/merge.md's table)
FILTERS = {
    "llama": ("self_attn", "mlp"), "mistral": ("self_attn", "mlp"),
    "qwen2": ("self_attn", "mlp"), "qwen3": ("self_attn", "mlp"),
    "gemma": ("self_attn", "mlp"), "gemma2": ("self_attn", "mlp"),
    "gemma3": ("self_attn", "mlp"), "phi3": ("self_attn", "mlp"),
    "gpt2": ("attn", "mlp"), "gpt_neox": ("attention.", "mlp"),
    "mixtral": ("self_attn", "block_sparse_moe"), "falcon": ("self_attention", "mlp"),
}
# written independently of io/naming: the module container right after the layer index
ATTENTION = re.compile(r"\.\d+\.(self_attn|attention|attn|self_attention)\.")
MLP = re.compile(r"\.\d+\.(mlp|block_sparse_moe)\.")
# mergekit 0.1.5 cannot merge these transformers-5 checkpoints (its architecture files expect
# tensors that are not there: GPT-NeoX's attention.bias buffer, Falcon's ln_attn)
MERGEKIT_FAILS = {"gpt_neox": "attention.bias", "falcon": "ln_attn"}
# transformers 5 loads Mixtral's per-expert tensors into fused ones, and GPT-NeoX's head
# under another name
LIVE_CONVERTED = {"mixtral"}
LIVE_RENAMED = {"gpt_neox": {"embed_out.weight": "lm_head.weight"}}


def test_the_table_covers_every_tiny_architecture() -> None:
    assert set(FILTERS) == set(ARCHITECTURES)
    assert len(ARCHITECTURES) == 12


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_module_groups(families: dict[str, list[Path]], arch: str) -> None:
    names = Checkpoint(families[arch][0]).names()
    filters = group_filters(names)
    assert (filters["attention"], filters["mlp"]) == ([FILTERS[arch][0]], [FILTERS[arch][1]])
    layer = [n for n in names if classify(n).layer is not None]
    attention = [n for n in layer if ATTENTION.search(n)]
    mlp = [n for n in layer if MLP.search(n)]
    assert attention and mlp
    for n in layer:
        expected = "attention" if n in attention else "mlp" if n in mlp else "norm"
        assert classify(n).kind == expected, n


def _layerwise_recipe(paths: list[Path]) -> object:
    """attention from ft1, MLP from ft2, everything else from the base (task arithmetic with
    one-hot weights per module group)."""
    base, ft1, ft2 = (str(p) for p in paths)
    space = LayerwiseSpace("task_arithmetic", [ft1, ft2], base, 4, 4, ("attention", "mlp",
                                                                         "other"))
    genome = np.zeros(len(space.genes))
    for i, gene in enumerate(space.genes):
        group, model = gene.name.split(".")[1:3]
        genome[i] = float((group, model) in (("attention", "ft1"), ("mlp", "ft2")))
    return space.to_recipe(genome)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_layerwise_merge_takes_each_module_group_from_its_model(
        families: dict[str, list[Path]], tmp_path: Path, arch: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = _layerwise_recipe(families[arch])
    out = merge_to_disk(recipe, tmp_path / "merged")
    merged = load_model_tensors(out)
    base, ft1, ft2 = (load_model_tensors(p) for p in families[arch])
    changed = 0
    for name, tensor in merged.items():
        owner = ft1 if ATTENTION.search(name) else ft2 if MLP.search(name) else base
        torch.testing.assert_close(tensor, owner[name], rtol=1e-6, atol=1e-6, msg=name)
        changed += int(not tensor.equal(base[name]))
    assert changed >= 4 * 2  # at least attention and MLP of every layer
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("1 + 2 =", return_tensors="pt").input_ids
    generated = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, ids.shape[1] + 4)


def _fused(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mixtral per-expert tensors in transformers 5's fused layout (what mergekit writes)."""
    out = {k: v for k, v in tensors.items() if ".experts." not in k}
    layers = {int(m.group(1)) for k in tensors if (m := re.search(r"layers\.(\d+)\.", k))}
    for n in layers:
        p = f"model.layers.{n}.block_sparse_moe"
        experts = sorted({int(m.group(1)) for k in tensors
                          if (m := re.search(rf"{re.escape(p)}\.experts\.(\d+)\.", k))})
        out[f"model.layers.{n}.mlp.experts.gate_up_proj"] = torch.stack([torch.cat(
            [tensors[f"{p}.experts.{e}.w1.weight"], tensors[f"{p}.experts.{e}.w3.weight"]])
            for e in experts])
        out[f"model.layers.{n}.mlp.experts.down_proj"] = torch.stack(
            [tensors[f"{p}.experts.{e}.w2.weight"] for e in experts])
        out[f"model.layers.{n}.mlp.gate.weight"] = out.pop(f"{p}.gate.weight")
    return out


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a not in
                                  ("llama", "mistral", "qwen2", "gemma", "gpt2")])
def test_ties_matches_mergekit(families: dict[str, list[Path]], tmp_path: Path,
                               arch: str) -> None:
    """The five first architectures run every method in test_parity_mergekit.py. Mixtral:
    mergekit reads the experts into transformers 5's fused tensors and TIES then trims over
    all experts at once, evomerge per expert tensor as stored (as mergekit did before), so
    the comparison uses an element-wise method there."""
    base, ft1, ft2 = (str(p) for p in families[arch])
    method = "task_arithmetic" if arch == "mixtral" else "ties"
    density = {} if method == "task_arithmetic" else {"density": 0.5}
    recipe = {"merge_method": method, "base_model": base, "dtype": "float32", "models": [
        {"model": ft1, "parameters": {"weight": 1.0, **density}},
        {"model": ft2, "parameters": {"weight": 0.5, **density}}]}
    ours = run_evomerge(recipe, tmp_path / "ours")
    if arch in MERGEKIT_FAILS:
        with pytest.raises(RuntimeError, match=MERGEKIT_FAILS[arch]):
            run_mergekit(recipe, tmp_path / "mergekit")
        return
    theirs = run_mergekit(recipe, tmp_path / "mergekit")
    assert_same_tensors(_fused(ours) if arch == "mixtral" else ours, theirs)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_live_merge_equals_the_merge_on_disk(families: dict[str, list[Path]], tmp_path: Path,
                                             arch: str) -> None:
    from evomerge.errors import ModelError
    from evomerge.io.hf import load_causal_lm

    paths = families[arch]
    sources = {str(p): Checkpoint(p) for p in paths}
    if arch in LIVE_CONVERTED:
        with pytest.raises(ModelError, match="converts its tensors on load"):
            live_names(paths[0], sources[str(paths[0])])
        return
    renamed = live_names(paths[0], sources[str(paths[0])])
    assert renamed == LIVE_RENAMED.get(arch, {})
    recipe = _layerwise_recipe(paths)
    model = load_causal_lm(paths[0])
    LiveMerger(model, sources, renamed=renamed).apply(recipe)
    expected = MergePlan.build(recipe, sources).merge_to_dict()
    live = model.state_dict()
    for name, tensor in expected.items():
        torch.testing.assert_close(live[renamed.get(name, name)], tensor, rtol=0, atol=0,
                                   msg=name)
