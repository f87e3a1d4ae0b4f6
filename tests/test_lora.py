"""LoRA adapters as merge inputs, against PEFT's own ``merge_and_unload()``: a tensor read from
an adapter equals the tensor of the merged-and-unloaded model, and a merge over an adapter
equals the same merge over the unloaded checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from evomerge.errors import ModelError
from evomerge.io.lora import LoraSource, open_model

from .helpers import assert_same_tensors, load_model_tensors, run_evomerge
from .test_cli import run_cli, write_recipe

peft = pytest.importorskip("peft")


def make_adapter(base: Path, out: Path, seed: int = 0, **options: Any) -> Path:
    """A PEFT LoRA adapter with random A and B (PEFT starts B at zero: no delta to test)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    options.setdefault("target_modules", ["q_proj", "v_proj", "down_proj"])
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                  **options))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.1)
            elif "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.01)
    peft_model.save_pretrained(out)
    return out


def unloaded(base: Path, adapter: Path, out: Path) -> Path:
    """PEFT's reference: the adapter merged into the base and saved as a checkpoint."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
    model.merge_and_unload().save_pretrained(out)
    return out


CASES = {
    "lora": dict(rank_pattern={"v_proj": 2}, alpha_pattern={"layers.1.self_attn.q_proj": 3}),
    "rslora": dict(use_rslora=True),
    "dora": dict(use_dora=True),
    "embedding_and_saved_head": dict(target_modules=["q_proj", "embed_tokens"],
                                     modules_to_save=["lm_head"]),
}


@pytest.mark.parametrize("case", CASES)
def test_adapter_tensors_equal_peft_merge_and_unload(llama: list[Path], tmp_path: Path,
                                                     case: str) -> None:
    base = llama[0]
    adapter = make_adapter(base, tmp_path / "adapter", **CASES[case])
    reference = load_model_tensors(unloaded(base, adapter, tmp_path / "unloaded"))
    source = open_model(str(adapter))  # the adapter's base_model_name_or_path is local
    assert isinstance(source, LoraSource)
    changed = 0
    base_tensors = load_model_tensors(base)
    for name in source.names():
        ours = source.get(name)
        torch.testing.assert_close(ours, reference[name], rtol=1e-5, atol=1e-6, msg=name)
        changed += int(not ours.equal(base_tensors[name]))
    assert changed >= 4  # the adapter really changed tensors in every case


def test_gpt2_conv1d_adapter_is_transposed_like_peft(families: dict[str, list[Path]],
                                                     tmp_path: Path) -> None:
    base = families["gpt2"][0]
    adapter = make_adapter(base, tmp_path / "adapter", target_modules=["c_attn", "c_fc"],
                           fan_in_fan_out=True)
    reference = load_model_tensors(unloaded(base, adapter, tmp_path / "unloaded"))
    source = open_model(f"{base}+{adapter}")
    for name in ("transformer.h.0.attn.c_attn.weight", "transformer.h.3.mlp.c_fc.weight"):
        torch.testing.assert_close(source.get(name), reference[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("form", ["adapter directory", "base+adapter"])
def test_ties_over_an_adapter_equals_ties_over_peft_unloaded(llama: list[Path], tmp_path: Path,
                                                             form: str) -> None:
    base, _, ft2 = llama
    adapter = make_adapter(base, tmp_path / "adapter", **CASES["lora"])
    ref_dir = unloaded(base, adapter, tmp_path / "unloaded")

    def recipe(first: str) -> dict[str, Any]:
        return {"merge_method": "ties", "base_model": str(base), "dtype": "float32",
                "models": [{"model": first, "parameters": {"weight": 1.0, "density": 0.6}},
                           {"model": str(ft2), "parameters": {"weight": 0.7, "density": 0.6}}]}

    first = str(adapter) if form == "adapter directory" else f"{base}+{adapter}"
    ours = run_evomerge(recipe(first), tmp_path / "ours")
    theirs = run_evomerge(recipe(str(ref_dir)), tmp_path / "theirs")
    assert_same_tensors(ours, theirs)


def test_relative_base_plus_adapter_in_a_recipe_file(llama: list[Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """mergekit's syntax, written relative to the recipe file, through the CLI."""
    import shutil

    base = shutil.copytree(llama[0], tmp_path / "models" / "base")
    adapter = make_adapter(base, tmp_path / "models" / "lora")
    recipe = write_recipe(tmp_path / "models" / "r.yaml", {
        "merge_method": "linear", "models": [
            {"model": "base+lora", "parameters": {"weight": 1.0}}]})
    out = tmp_path / "out"
    code, err = run_cli(["merge", str(recipe), "-o", str(out)], capsys)
    assert code == 0, err
    reference = load_model_tensors(unloaded(base, adapter, tmp_path / "unloaded"))
    assert_same_tensors(load_model_tensors(out), reference)
    assert (out / "tokenizer.json").exists()  # from the base


def _write_config(adapter: Path, **changes: Any) -> None:
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg.update(changes)
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("changes, message", [
    ({"peft_type": "IA3"}, "PEFT type IA3 is not supported"),
    ({"bias": "all"}, "adapters that train biases"),
    ({"base_model_name_or_path": "meta-llama/Llama-3.1-8B"}, "name it as BASE_DIR+"),
])
def test_unsupported_adapters_are_one_line_errors(llama: list[Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  changes: dict[str, Any], message: str) -> None:
    base, ft1, _ = llama
    adapter = make_adapter(base, tmp_path / "adapter")
    _write_config(adapter, **changes)
    recipe = write_recipe(tmp_path / "r.yaml", {
        "merge_method": "task_arithmetic", "base_model": str(base),
        "models": [{"model": str(adapter), "parameters": {"weight": 1.0}},
                   {"model": str(ft1), "parameters": {"weight": 1.0}}]})
    out = tmp_path / "out"
    code, err = run_cli(["merge", str(recipe), "-o", str(out)], capsys)
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_an_adapter_for_another_model_is_refused(llama: list[Path],
                                                 families: dict[str, list[Path]],
                                                 tmp_path: Path) -> None:
    adapter = make_adapter(llama[0], tmp_path / "adapter")
    with pytest.raises(ModelError, match="the base model has no tensor|does not have"):
        open_model(f"{families['gpt2'][0]}+{adapter}")


@pytest.mark.slow
def test_a_search_over_an_adapter_equals_the_search_over_its_unloaded_model(
        tiny_zoo: Path, tmp_path: Path) -> None:
    from evomerge.config import load_config
    from evomerge.run.loop import evolve

    from .test_evolve import config

    base = tiny_zoo / "base"
    adapter = make_adapter(base, tmp_path / "adapter", target_modules=["q_proj", "up_proj"])
    unloaded_dir = unloaded(base, adapter, tmp_path / "unloaded")
    small = dict(fitness={"subset_size": 20, "estimator": "mean"},
                 optimizer={"name": "ga", "pop_size": 4, "generations": 2})
    results = []
    for label, first in (("adapter", f"{base}+{adapter}"), ("unloaded", str(unloaded_dir))):
        cfg = config(tiny_zoo, tmp_path / f"run_{label}", **small)
        cfg["models"] = [first, str(tiny_zoo / "lang_it")]
        results.append(evolve(load_config(cfg)))
    ours, theirs = results
    assert ours.history == theirs.history
    assert sorted(map(str, ours.test.values())) == sorted(map(str, theirs.test.values()))
    ref = f"{base}+{adapter}"
    assert sum(ref in str(entry.get("recipe")) for entry in ours.final) >= 2
    assert (tmp_path / "run_adapter" / "best" / "model.safetensors").exists()


def test_an_adapter_loads_as_a_model_equal_to_peft_unloaded(llama: list[Path],
                                                            tmp_path: Path) -> None:
    """How the layer-stacking (dis) space and evaluation open an adapter reference."""
    from transformers import AutoModelForCausalLM

    from evomerge.io.hf import load_causal_lm

    base = llama[0]
    adapter = make_adapter(base, tmp_path / "adapter", use_dora=True)
    ours = load_causal_lm(f"{base}+{adapter}").eval()
    theirs = AutoModelForCausalLM.from_pretrained(
        unloaded(base, adapter, tmp_path / "unloaded")).eval()
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours(ids).logits,
                              AutoModelForCausalLM.from_pretrained(base)(ids).logits)
