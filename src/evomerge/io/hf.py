"""Loading local Hugging Face models and tokenizers for evaluation and training, with
remote code refused and every failure turned into one line naming the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from evomerge.errors import ModelError


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
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype,
                                                    trust_remote_code=False)
    except Exception as exc:  # transformers raises many types for unusable directories
        raise ModelError(f"model {str(path)!r}: cannot load it as a causal LM: {_why(exc)}"
                         ) from None
