"""Classify tensors by name: layer index and module kind, without per-architecture tables.

Hugging Face checkpoints name repeated blocks ``<prefix>.<container>.<N>.<rest>`` with a
handful of containers (``layers``, ``h``, ``blocks``, ``layer``, ``block``). Module kinds follow
from well-known substrings. This covers Llama, Mistral, Qwen2/3, Gemma, GPT-2, GPT-NeoX, Phi
and most other decoder-only models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

ModuleKind = Literal["embedding", "attention", "mlp", "norm", "head", "other"]

LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer|block)\.(\d+)\.")

_EMBEDDING = ("embed_tokens", "embed_positions", "wte", "wpe", "word_embeddings",
              "position_embeddings", "embeddings", "tok_embeddings", "embed_in")
_HEAD = ("lm_head", "embed_out", "score.", "output.weight")
_ATTENTION = ("attn", "attention", "q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj",
              "query_key_value", "c_attn")
_MLP = ("mlp", "feed_forward", "ffn", "gate_proj", "up_proj", "down_proj", "c_fc",
        "fc1", "fc2", "dense_h_to_4h", "dense_4h_to_h", "w1.", "w2.", "w3.", "moe", "experts")
_NORM = ("norm", "ln_", "layernorm", "ln1", "ln2")

# the module groups the layer-wise and LFS spaces give their own genes (see group_filters)
GROUPS = ("attention", "mlp")

LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


@dataclass(frozen=True)
class TensorInfo:
    """What a tensor is: its layer (None outside the repeated blocks) and module kind."""

    name: str
    layer: int | None
    kind: ModuleKind

    def with_layer(self, layer: int) -> str:
        """The same tensor name moved to another layer index (for layer stacking)."""
        if self.layer is None:
            raise ValueError(f"{self.name} is not a layer tensor")
        m = LAYER_RE.search(self.name)
        assert m is not None
        return self.name[: m.start(1)] + str(layer) + self.name[m.end(1) :]


def layer_index(name: str) -> int | None:
    m = LAYER_RE.search(name)
    return int(m.group(1)) if m else None


def module_kind(name: str) -> ModuleKind:
    """Inside a layer the module container decides (``post_attention_layernorm`` is a norm,
    ``self_attn.q_norm`` is attention, ``block_sparse_moe.gate`` is MLP); outside the layers
    and for containers that say nothing, the whole name does."""
    lowered = name.lower()
    m = LAYER_RE.search(lowered)
    if m is None:
        if any(k in lowered for k in _HEAD):
            return "head"
        if any(k in lowered for k in _EMBEDDING):
            return "embedding"
    else:
        container = lowered[m.end():].split(".")[0]
        for kind, keys in (("norm", _NORM), ("attention", _ATTENTION), ("mlp", _MLP)):
            if any(k.rstrip(".") in container for k in keys):
                return kind  # type: ignore[return-value]
    for kind, keys in (("attention", _ATTENTION), ("mlp", _MLP), ("norm", _NORM)):
        if any(k in lowered for k in keys):
            return kind  # type: ignore[return-value]
    return "other"


def classify(name: str) -> TensorInfo:
    return TensorInfo(name=name, layer=layer_index(name), kind=module_kind(name))


def group_of(name: str) -> str:
    """The space group of a tensor: attention, mlp, or other (norms and the rest)."""
    kind = module_kind(name)
    return kind if kind in GROUPS else "other"


def group_filters(names: list[str]) -> dict[str, list[str]]:
    """Recipe filters (name substrings, as mergekit matches them) that select each group's
    layer tensors in a model with these tensor names, derived from ``module_kind`` so the
    spaces and the classification cannot disagree.

    A filter is the module container after the layer index (``self_attn``, ``attention.``,
    ``block_sparse_moe``), the shortest form that selects exactly its group's tensors; where a
    container mixes groups, the full names below the layer index are used instead. Checked on
    every layer tensor: the first group whose filter matches is the tensor's group."""
    layer_rest: dict[str, str] = {}
    for name in names:
        m = LAYER_RE.search(name)
        if m:
            layer_rest[name] = name[m.end():]
    containers: dict[str, set[str]] = {}
    for name, rest in layer_rest.items():
        containers.setdefault(rest.split(".")[0], set()).add(group_of(name))
    filters: dict[str, list[str]] = {g: [] for g in GROUPS}
    for container, groups in containers.items():
        if len(groups) == 1 and (group := next(iter(groups))) in GROUPS:
            bare_ok = all(container not in rest or group_of(n) == group
                          for n, rest in layer_rest.items())
            filters[group].append(container if bare_ok else f"{container}.")
        elif groups & set(GROUPS):
            for name, rest in layer_rest.items():
                if rest.split(".")[0] == container and group_of(name) in GROUPS:
                    filters[group_of(name)].append(rest)
    for name in layer_rest:
        chosen = next((g for g in GROUPS if any(f in name for f in filters[g])), "other")
        if chosen != group_of(name):
            from evomerge.errors import ModelError

            raise ModelError(f"tensor {name}: no module filter separates it from the "
                             f"{chosen} group; the layer-wise spaces cannot tell its module")
    return filters


def num_layers_of(config: dict[str, Any] | None, names: list[str] | None = None) -> int:
    """Number of repeated blocks: from the HF config, else from the tensor names."""
    if config:
        for source in (config, config.get("text_config") or {}):
            for key in LAYER_COUNT_KEYS:
                if isinstance(source.get(key), int):
                    return int(source[key])
    indices = [i for i in (layer_index(n) for n in names or []) if i is not None]
    return max(indices) + 1 if indices else 0


def is_tied(config: dict[str, Any] | None) -> bool:
    """Whether the output head shares the input embedding (HF default: tied)."""
    if not config:
        return False
    value = config.get("tie_word_embeddings")
    if value is None:
        value = (config.get("text_config") or {}).get("tie_word_embeddings", True)
    return bool(value)


HEAD_NAMES = ("lm_head.weight", "embed_out.weight")
EMBEDDING_NAMES = ("model.embed_tokens.weight", "transformer.wte.weight", "wte.weight",
                   "gpt_neox.embed_in.weight", "model.language_model.embed_tokens.weight")


def tied_source(name: str, available: set[str]) -> str | None:
    """For a missing output head, the embedding tensor it is tied to, if present."""
    if name not in HEAD_NAMES:
        return None
    for candidate in EMBEDDING_NAMES:
        if candidate in available:
            return candidate
    return None
