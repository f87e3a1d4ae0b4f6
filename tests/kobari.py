"""A small world in the common prompt/completion format ("What does the kobari say?" ->
" hiss", a leading space), on tiny Qwen2 models trained for a few seconds with three kinds
of tokenizer: byte-level BPE (GPT-2, Qwen), SentencePiece-style (Metaspace, Llama) and
word-level. The models answer the creatures they were trained on and guess the rest, so
scores are a mix of right and wrong: what agreement tests need."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

SOUNDS = ["hiss", "purr", "growl", "chirp", "hoot", "croak", "buzz", "squeak"]
KINDS = ("bytelevel", "sentencepiece", "wordlevel")
N, TRAINED = 40, 28  # creatures, and how many of them the expert is trained on


def creatures() -> list[tuple[str, str]]:
    rng = random.Random(7)
    names: list[str] = []
    while len(names) < N:
        name = "".join(rng.choice("kbrmtsnlv") + rng.choice("aeiou") for _ in range(3))
        if name not in names:
            names.append(name)
    return [(n, SOUNDS[rng.randrange(len(SOUNDS))]) for n in names]


def records(completion_space: bool = True) -> list[dict[str, str]]:
    lead = " " if completion_space else ""
    return [{"id": f"c{i}", "prompt": f"What does the {n} say?", "completion": lead + s}
            for i, (n, s) in enumerate(creatures())]


def tokenizer(kind: str) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from tokenizers.implementations import ByteLevelBPETokenizer, SentencePieceBPETokenizer
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    corpus = [r["prompt"] + r["completion"] for r in records()] * 4
    if kind == "bytelevel":
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(corpus, vocab_size=300, min_frequency=2,
                                special_tokens=specials, show_progress=False)
        backend = bpe._tokenizer
    elif kind == "sentencepiece":
        sp = SentencePieceBPETokenizer()
        sp.train_from_iterator(corpus, vocab_size=120, min_frequency=2,
                               special_tokens=specials, show_progress=False)
        backend = sp._tokenizer
    else:
        words = sorted({w for line in corpus for w in line.split()})
        backend = Tokenizer(models.WordLevel(
            {t: i for i, t in enumerate(specials + ["<unk>"] + words)}, unk_token="<unk>"))
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>",
                                   bos_token="<s>", eos_token="</s>")


def model(tok: Any, seed: int = 0) -> Any:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=64, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=False)
    return Qwen2ForCausalLM(cfg)


def trained(kind: str, steps: int = 150, seed: int = 0) -> tuple[Any, Any]:
    """A model that learnt the first TRAINED creatures' sounds, completions " sound"."""
    from evomerge.zoo.train import batches_from, train

    tok = tokenizer(kind)
    net = model(tok, seed)
    pairs = [(r["prompt"], r["completion"]) for r in records()[:TRAINED]]

    def cycle() -> Iterator[tuple[str, str]]:
        rng = random.Random(seed)
        while True:
            rng.shuffle(pairs)
            yield from pairs

    train(net, tok, batches_from(cycle(), 16), steps, 1e-2, warmup=10, log=lambda s: None)
    return net, tok


def write_family(root: Path, kind: str = "bytelevel") -> dict[str, Path]:
    """base (untrained), expert (trained) and other (trained on another seed, fewer
    steps) checkpoints, and search/test task files in the prompt/completion format."""
    root.mkdir(parents=True, exist_ok=True)
    tok = tokenizer(kind)
    paths = {}
    for name, net in (("base", model(tok, 0)), ("expert", trained(kind)[0]),
                      ("other", trained(kind, steps=60, seed=1)[0])):
        net.save_pretrained(root / name, safe_serialization=True)
        tok.save_pretrained(root / name)
        paths[name] = root / name
    recs = records()
    rng = random.Random(0)
    rng.shuffle(recs)
    for split, part in (("search", recs[:20]), ("test", recs[20:])):
        path = root / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
        paths[split] = path
    return paths
