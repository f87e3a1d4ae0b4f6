"""Loading local Hugging Face models and tokenizers for evaluation and training, with
remote code refused and every failure turned into one line naming the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from evomerge.errors import ModelError
from evomerge.io.checkpoint import TensorSource


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    if "trust_remote_code" in str(exc) or "custom code" in str(exc):
        return ("it needs its own Python code (trust_remote_code), which evomerge does not "
                "run; use a model whose architecture transformers knows")
    return first[:300]


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    except Exception as exc:  # transformers raises many types for unusable directories
        raise ModelError(f"model {str(path)!r}: cannot load its tokenizer: {_why(exc)}"
                         ) from None


def load_causal_lm(path: str | Path, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A local checkpoint, or a LoRA adapter reference (io/lora) loaded as its base with the
    adapter merged in."""
    from transformers import AutoModelForCausalLM

    from evomerge.io.lora import LoraSource, is_adapter, open_model, split_reference

    if is_adapter(path) or split_reference(str(path)) is not None:
        source = open_model(str(path))
        assert isinstance(source, LoraSource)
        model = load_causal_lm(source.path, dtype)
        state = model.state_dict()
        renamed = live_names(source.path, source.base)
        with torch.no_grad():
            for name in source.names():
                state[renamed.get(name, name)].copy_(source.get(name))
        return model
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype,
                                                    trust_remote_code=False)
    except Exception as exc:  # transformers raises many types for unusable directories
        raise ModelError(f"model {str(path)!r}: cannot load it as a causal LM: {_why(exc)}"
                         ) from None


def live_names(path: str | Path, source: TensorSource) -> dict[str, str]:
    """Checkpoint tensor name -> the loaded model's parameter name, for the tensors that
    transformers renames on load (GPT-NeoX's ``embed_out`` is ``lm_head`` in transformers 5);
    empty when every name is kept. The pairing is by shape among the names that do not
    match, and only when it is unique. Architectures that transformers converts beyond a
    rename (Mixtral's experts fused into ``mlp.experts.gate_up_proj``) are refused with one
    line, before any work: the live merge of a search writes checkpoint tensors into the
    loaded model by name. Built on the meta device, so nothing is allocated."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except Exception as exc:  # transformers raises many types for unusable directories
        raise ModelError(f"model {str(path)!r}: cannot load it as a causal LM: {_why(exc)}"
                         ) from None
    state = model.state_dict()
    names = source.names()
    ours = set(names)
    spare = {n: tuple(t.shape) for n, t in state.items() if n not in ours}
    renamed: dict[str, str] = {}
    for name in names:
        if name in state:
            continue
        shape = tuple(source.shape(name))
        matches = [live for live, s in spare.items() if s == shape]
        if len(matches) != 1:
            raise ModelError(
                f"model {str(path)!r}: transformers converts its tensors on load ({name} is "
                f"not a parameter of {type(model).__name__}), so searches cannot merge into "
                "it live yet; `evomerge merge` merges it")
        renamed[name] = matches[0]
        del spare[matches[0]]
    return renamed

