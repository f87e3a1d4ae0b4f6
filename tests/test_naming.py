from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from evomerge.io.naming import classify, is_tied, num_layers_of


@pytest.mark.parametrize("name, layer, kind", [
    ("model.embed_tokens.weight", None, "embedding"),
    ("lm_head.weight", None, "head"),
    ("model.norm.weight", None, "norm"),
    ("model.layers.3.self_attn.q_proj.weight", 3, "attention"),
    ("model.layers.12.mlp.down_proj.weight", 12, "mlp"),
    ("model.layers.0.input_layernorm.weight", 0, "norm"),
    ("model.layers.2.self_attn.q_norm.weight", 2, "attention"),
    ("transformer.h.7.attn.c_attn.weight", 7, "attention"),
    ("transformer.h.7.mlp.c_fc.bias", 7, "mlp"),
    ("transformer.h.7.ln_2.weight", 7, "norm"),
    ("transformer.wte.weight", None, "embedding"),
    ("transformer.wpe.weight", None, "embedding"),
    ("transformer.ln_f.weight", None, "norm"),
    ("gpt_neox.layers.1.attention.query_key_value.weight", 1, "attention"),
    ("model.blocks.4.ffn.w1.weight", 4, "mlp"),
])
def test_classify_known_names(name: str, layer: int | None, kind: str) -> None:
    info = classify(name)
    assert (info.layer, info.kind) == (layer, kind)


def test_with_layer_renames_only_the_index() -> None:
    info = classify("model.layers.3.mlp.layers_proj.weight")
    assert info.with_layer(11) == "model.layers.11.mlp.layers_proj.weight"


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "gemma", "gpt2"])
def test_every_tensor_of_real_tiny_models_is_classified(families: dict[str, list[Path]],
                                                        arch: str) -> None:
    base = families[arch][0]
    config = json.loads((base / "config.json").read_text())
    with safe_open(str(base / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    infos = [classify(n) for n in names]
    n_layers = num_layers_of(config, names)
    assert n_layers == 4
    assert sorted({i.layer for i in infos if i.layer is not None}) == [0, 1, 2, 3]
    kinds = {i.kind for i in infos}
    assert {"embedding", "attention", "mlp", "norm"} <= kinds
    assert "other" not in kinds
    # tied models store no head; untied ones store exactly one
    heads = [i for i in infos if i.kind == "head"]
    assert len(heads) == (0 if is_tied(config) else 1)
    assert is_tied(config) == (arch in ("gemma", "gpt2"))
    # per layer, the same count of attention and MLP tensors
    per_layer = {layer: sum(1 for i in infos if i.layer == layer) for layer in range(4)}
    assert len(set(per_layer.values())) == 1
