"""LoRA adapters (PEFT's saved format) as merge inputs: the base model with the adapter folded
in, one tensor at a time.

A model reference is a checkpoint directory, a PEFT adapter directory (its
``base_model_name_or_path`` must be a local directory) or mergekit's ``BASE+ADAPTER``. For a
tensor the adapter touches, ``get`` returns what PEFT's ``merge_and_unload()`` would hold:

- LoRA on a linear layer: ``W + scale * B @ A`` (transposed for ``fan_in_fan_out`` layers such
  as GPT-2's Conv1D), ``scale = alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA; ``r`` is the
  stored rank and ``alpha`` comes from ``alpha_pattern`` when a key matches the module (PEFT's
  rule: the module name ends with ``.key``), else ``lora_alpha``;
- LoRA on an embedding: ``W + scale * (B @ A)^T``;
- DoRA on a linear layer: ``m / ||W + dW||_row * (W + dW)``, the norm per output row;
- tensors the adapter stores whole (``modules_to_save``, a resized embedding's
  ``base_layer``) replace the base's.

Nothing else of the adapter is held in memory: its safetensors file is memory-mapped and the
delta is formed when the tensor is read. Adapter kinds that would change the result in ways
not listed (other PEFT types, LoRA biases, target_parameters, trainable tokens, layer
replication, DoRA on embeddings) are refused with one line.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from evomerge.errors import ModelError
from evomerge.io.checkpoint import Checkpoint, TensorSource

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
PREFIX = "base_model.model."
# settings that change the merged weights in ways this module does not reproduce
_REFUSED = {"lora_bias": "LoRA biases (lora_bias)", "target_parameters": "target_parameters",
            "trainable_token_indices": "trainable tokens", "layer_replication":
            "layer_replication", "use_qalora": "QA-LoRA", "use_bdlora": "BD-LoRA"}


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def split_reference(ref: str) -> tuple[str, str] | None:
    """mergekit's ``BASE+ADAPTER``: the split at a ``+`` where both sides are directories
    (paths may hold ``+`` themselves), or None when ``ref`` is not such a reference."""
    if Path(ref).exists() or "+" not in ref:
        return None
    parts = ref.split("+")
    for i in range(1, len(parts)):
        base, adapter = "+".join(parts[:i]), "+".join(parts[i:])
        if Path(base).is_dir() and Path(adapter).is_dir():
            return base, adapter
    return None


def input_dirs(ref: str) -> list[str]:
    """Every directory a reference reads (the output may never replace one of them)."""
    split = split_reference(ref)
    if split is not None:
        return list(split)
    if is_adapter(ref):
        try:
            base = json.loads((Path(ref) / ADAPTER_CONFIG).read_text()).get(
                "base_model_name_or_path")
        except (OSError, ValueError, AttributeError):
            base = None
        return [ref, base] if isinstance(base, str) and Path(base).is_dir() else [ref]
    return [ref]


def open_model(ref: str) -> TensorSource:
    """The tensor source for a model reference in a recipe or config."""
    split = split_reference(ref)
    if split is not None:
        return LoraSource(Checkpoint(split[0]), split[1], name=ref)
    if "+" in ref and not Path(ref).exists():
        raise ModelError(f"model {ref!r}: BASE+ADAPTER needs both to be directories")
    if is_adapter(ref):
        base = _adapter_config(Path(ref), ref).get("base_model_name_or_path")
        if not isinstance(base, str) or not Path(base).is_dir():
            raise ModelError(
                f"model {ref!r} is a LoRA adapter whose base model {base!r} is not a local "
                f"directory; name it as BASE_DIR+{ref}")
        return LoraSource(Checkpoint(base), ref, name=ref)
    return Checkpoint(ref)


def _adapter_config(path: Path, name: str) -> dict[str, Any]:
    try:
        config = json.loads((path / ADAPTER_CONFIG).read_text())
    except FileNotFoundError:
        raise ModelError(f"model {name!r}: {path} has no {ADAPTER_CONFIG} (not a PEFT "
                         "adapter)") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"model {name!r}: {ADAPTER_CONFIG} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ModelError(f"model {name!r}: {ADAPTER_CONFIG} is not a JSON object")
    return config


class LoraSource:
    """A base checkpoint with a LoRA adapter merged in lazily, as a ``TensorSource``."""

    def __init__(self, base: Checkpoint, adapter: str | Path, name: str | None = None) -> None:
        self.base = base
        self.adapter = Path(adapter)
        self.name = name or f"{base.path}+{adapter}"
        self.path = base.path  # config, generation config and tokenizer come from the base
        cfg = _adapter_config(self.adapter, self.name)
        self._check(cfg)
        self.fan_in_fan_out = bool(cfg.get("fan_in_fan_out"))
        self.rslora = bool(cfg.get("use_rslora"))
        self.alpha = float(cfg.get("lora_alpha") or cfg.get("r") or 8)
        self.alpha_pattern: dict[str, float] = dict(cfg.get("alpha_pattern") or {})
        self._open_weights()
        self._index()
        self.config = base.config
        emb = next((n for n in self.replaced if "embed" in n), None)
        if base.config is not None and emb is not None:  # an embedding resized by the adapter
            self.config = {**base.config, "vocab_size": int(self.shape(emb)[0])}

    def _check(self, cfg: dict[str, Any]) -> None:
        kind = cfg.get("peft_type", "LORA")
        if kind != "LORA":
            raise ModelError(f"model {self.name!r}: PEFT type {kind} is not supported (LoRA, "
                             "rsLoRA and DoRA adapters are)")
        if cfg.get("bias", "none") != "none":
            raise ModelError(f"model {self.name!r}: adapters that train biases (bias: "
                             f"{cfg['bias']}) are not supported")
        for key, what in _REFUSED.items():
            if cfg.get(key):
                raise ModelError(f"model {self.name!r}: adapters with {what} are not supported")

    def _open_weights(self) -> None:
        f = self.adapter / ADAPTER_FILES[0]
        self._tensors: dict[str, torch.Tensor] = {}
        if f.is_file():
            try:
                handle = safe_open(str(f), framework="pt", device="cpu")
            except (SafetensorError, OSError, ValueError) as exc:
                raise ModelError(f"model {self.name!r}: cannot read {f.name}: {exc}") from None
            self._handle: Any = handle
            self._keys = list(handle.keys())
            return
        f = self.adapter / ADAPTER_FILES[1]
        if not f.is_file():
            raise ModelError(f"model {self.name!r}: no {' or '.join(ADAPTER_FILES)} in "
                             f"{self.adapter}")
        try:
            state = torch.load(str(f), map_location="cpu", mmap=True, weights_only=True)
        except Exception as exc:  # torch raises many types for corrupt archives
            raise ModelError(f"model {self.name!r}: cannot read {f.name}: {exc}") from None
        if not isinstance(state, dict):
            raise ModelError(f"model {self.name!r}: {f.name} does not hold a state dict")
        self._handle, self._tensors, self._keys = None, state, list(state)

    def _raw(self, key: str) -> torch.Tensor:
        if self._handle is not None:
            return self._handle.get_tensor(key)
        return self._tensors[key]

    def _index(self) -> None:
        """module -> its LoRA keys; target tensor -> the adapter key that replaces it."""
        self.lora: dict[str, dict[str, str]] = {}
        self.replaced: dict[str, str] = {}
        names = set(self.base.names())
        suffixes = {".lora_A.weight": "A", ".lora_B.weight": "B", ".lora_embedding_A": "EA",
                    ".lora_embedding_B": "EB", ".lora_magnitude_vector.weight": "M",
                    ".lora_magnitude_vector": "M"}
        for key in self._keys:
            short = key.removeprefix(PREFIX)
            suffix = next((s for s in suffixes if short.endswith(s)), None)
            if suffix is not None:
                module = short[: -len(suffix)]
                self.lora.setdefault(module, {})[suffixes[suffix]] = key
                continue
            target = short.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")
            if target not in names:
                raise ModelError(f"model {self.name!r}: the adapter holds {key}, but the base "
                                 f"model has no tensor {target}")
            self.replaced[target] = key
        for module, parts in self.lora.items():
            if f"{module}.weight" not in names:
                raise ModelError(f"model {self.name!r}: the adapter changes {module}, which "
                                 "the base model does not have")
            has = set(parts)
            if not ({"A", "B"} <= has or {"EA", "EB"} <= has):
                raise ModelError(f"model {self.name!r}: the adapter's {module} lacks its "
                                 "lora_A or lora_B")
            if "M" in has and "EA" in has:
                raise ModelError(f"model {self.name!r}: DoRA on an embedding ({module}) is not "
                                 "supported")

    def close(self) -> None:
        """Drop the base's memory maps and the adapter's."""
        self.base.close()
        self._handle, self._tensors = None, {}

    # -- TensorSource ----------------------------------------------------------------------
    def names(self) -> list[str]:
        return self.base.names()

    def __contains__(self, name: str) -> bool:
        return name in self.base

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self.replaced:
            return tuple(self._raw(self.replaced[name]).shape)
        return self.base.shape(name)

    def dtype(self, name: str) -> torch.dtype:
        return self.base.dtype(name)

    def scale(self, module: str, rank: int) -> float:
        alpha = self.alpha
        for key, value in self.alpha_pattern.items():
            if re.match(rf"(.*\.)?({key})$", module):
                alpha = float(value)
                break
        return alpha / (math.sqrt(rank) if self.rslora else rank)

    def get(self, name: str) -> torch.Tensor:
        weight = (self._raw(self.replaced[name]) if name in self.replaced
                  else self.base.get(name))
        module = name.removesuffix(".weight")
        parts = self.lora.get(module) if name.endswith(".weight") else None
        if not parts:
            return weight
        w = weight.float()
        if "EA" in parts:  # embedding: A is [r, vocab], B is [hidden, r]
            a, b = self._raw(parts["EA"]).float(), self._raw(parts["EB"]).float()
            delta = (b @ a).T * self.scale(module, a.shape[0])
        else:
            a, b = self._raw(parts["A"]).float(), self._raw(parts["B"]).float()
            delta = b @ a * self.scale(module, a.shape[0])
            if self.fan_in_fan_out:
                delta = delta.T
        if delta.shape != w.shape:
            raise ModelError(f"model {self.name!r}: the adapter's {module} has shape "
                             f"{list(delta.shape)}, the base tensor {list(w.shape)}")
        merged = w + delta
        if "M" in parts:  # DoRA: magnitude per output row of the unmerged-orientation weight
            oriented = merged.T if self.fan_in_fan_out else merged
            norm = torch.linalg.norm(oriented, dim=1)
            factor = (self._raw(parts["M"]).float().reshape(-1) / norm).view(-1, 1)
            merged = (factor * oriented).T if self.fan_in_fan_out else factor * oriented
        low = weight.dtype in (torch.float16, torch.bfloat16)
        return merged if low else merged.to(weight.dtype)
