"""Deterministic tiny Hugging Face models for examples and tests (no downloads).

``make_family`` writes a random base model and fine-tunes of it (base + small random task
vectors), each a real checkpoint (``config.json``, safetensors, char-level tokenizer) that
``AutoModelForCausalLM.from_pretrained`` loads.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import torch

ARCHITECTURES = ("llama", "mistral", "qwen2", "gemma", "gpt2", "qwen3", "gemma2", "gemma3",
                 "phi3", "gpt_neox", "mixtral", "falcon")
CHARS = string.ascii_letters + string.digits + " .,:;?!+-*/=()'\n"


def tiny_config(arch: str, layers: int = 4, hidden: int = 32, vocab: int | None = None) -> Any:
    """A transformers config of ``arch`` small enough to build in milliseconds."""
    import transformers as tf

    vocab = vocab or len(CHARS) + 4
    common: dict[str, Any] = dict(vocab_size=vocab, bos_token_id=1, eos_token_id=2,
                                  pad_token_id=0)
    decoder = dict(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                   **common)
    if arch == "llama":
        return tf.LlamaConfig(**decoder, tie_word_embeddings=False)
    if arch == "mistral":
        return tf.MistralConfig(**decoder, sliding_window=64, tie_word_embeddings=False)
    if arch == "qwen2":
        return tf.Qwen2Config(**decoder, tie_word_embeddings=False)
    if arch == "gemma":
        return tf.GemmaConfig(**decoder, head_dim=hidden // 4, tie_word_embeddings=True)
    if arch == "gpt2":
        return tf.GPT2Config(n_embd=hidden, n_layer=layers, n_head=4, n_positions=128,
                             **common)
    if arch == "qwen3":  # q_norm / k_norm inside attention
        return tf.Qwen3Config(**decoder, head_dim=hidden // 4, tie_word_embeddings=False)
    if arch == "gemma2":  # four norms per layer (pre/post attention and feed-forward)
        return tf.Gemma2Config(**decoder, head_dim=hidden // 4, sliding_window=64,
                               tie_word_embeddings=True)
    if arch == "gemma3":  # the text model (Gemma3ForCausalLM)
        return tf.Gemma3TextConfig(**decoder, head_dim=hidden // 4, sliding_window=64,
                                   tie_word_embeddings=True)
    if arch == "phi3":  # fused qkv_proj and gate_up_proj
        return tf.Phi3Config(**decoder, tie_word_embeddings=False)
    if arch == "gpt_neox":  # attention.query_key_value beside post_attention_layernorm
        return tf.GPTNeoXConfig(hidden_size=hidden, intermediate_size=hidden * 2,
                                num_hidden_layers=layers, num_attention_heads=4,
                                max_position_embeddings=128, tie_word_embeddings=False,
                                **common)
    if arch == "mixtral":  # experts (block_sparse_moe.experts.N.w1..w3) and a router
        return tf.MixtralConfig(**decoder, num_local_experts=4, num_experts_per_tok=2,
                                tie_word_embeddings=False)
    if arch == "falcon":  # transformer.h.N.self_attention, multi-query
        return tf.FalconConfig(hidden_size=hidden, num_hidden_layers=layers,
                               num_attention_heads=4, multi_query=True,
                               new_decoder_architecture=False, **common)
    raise ValueError(f"unknown tiny architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")


def char_tokenizer() -> Any:
    """A char-level fast tokenizer that exports and reloads with AutoTokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + list(CHARS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def make_family(arch: str, out_dir: str | Path, n_finetunes: int = 2, seed: int = 0,
                delta_scale: float = 0.05, layers: int = 4, hidden: int = 32,
                dtype: torch.dtype = torch.float32, max_shard_size: str | None = None,
                tokenizer: bool = True) -> list[Path]:
    """Write ``base`` and ``ft1..ftN`` under ``out_dir``; returns their paths (base first)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(arch, layers=layers, hidden=hidden)
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_config(cfg).to(dtype)
    base_state = {k: v.detach().clone() for k, v in base.state_dict().items()}
    tok = char_tokenizer() if tokenizer else None
    paths = []
    gen = torch.Generator().manual_seed(seed + 1)
    for i in range(n_finetunes + 1):
        model = base
        if i > 0:
            model = AutoModelForCausalLM.from_config(cfg).to(dtype)
            state = {}
            for k, v in base_state.items():
                if v.is_floating_point():
                    scale = float(v.float().std()) if v.numel() > 1 else 1.0
                    scale = scale if scale > 0 else 0.02
                    noise = torch.randn(v.shape, generator=gen) * scale * delta_scale
                    state[k] = (v.float() + noise).to(v.dtype)
                else:
                    state[k] = v
            model.load_state_dict(state, strict=False)
            if getattr(cfg, "tie_word_embeddings", False):
                model.tie_weights()
        path = out / ("base" if i == 0 else f"ft{i}")
        kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
        model.save_pretrained(path, safe_serialization=True, **kwargs)
        if tok is not None:
            tok.save_pretrained(path)
        paths.append(path)
    return paths


CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% endif %}")


def make_chat_finetune(base: str | Path, out: str | Path, seed: int = 0,
                       added: tuple[str, ...] = ("<|im_start|>", "<|im_end|>"),
                       delta_scale: float = 0.05) -> Path:
    """A fine-tune of ``base`` that, like most chat fine-tunes, added special tokens (their
    embedding and head rows at the end) and a chat template: the vocabulary-merging case."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base))
    tok.add_special_tokens({"additional_special_tokens": list(added)})
    tok.chat_template = CHAT_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(str(base))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * float(p.std()) * delta_scale)
        model.resize_token_embeddings(len(tok), mean_resizing=False)
        for emb in {model.get_input_embeddings().weight, model.get_output_embeddings().weight}:
            emb[-len(added):] = torch.randn(len(added), emb.shape[1], generator=gen) * 0.02
    out = Path(out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
