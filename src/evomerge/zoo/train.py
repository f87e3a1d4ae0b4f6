"""Training the demo zoo's tiny models: a word-level tokenizer, a Llama base, and experts.

Deterministic for a seed on one machine (CPU, fixed thread count). Loss is on the answer and
end-of-sequence tokens only, as in instruction fine-tuning.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from evomerge.eval.answer_batches import encode_answers as encode
from evomerge.zoo.data import Item, vocabulary

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def word_tokenizer() -> Any:
    """Word-level fast tokenizer over the zoo's vocabulary (whitespace-separated words)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[
        ("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def model_config(vocab_size: int, hidden: int = 128, layers: int = 4) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 4,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                       max_position_embeddings=32, pad_token_id=0, bos_token_id=1,
                       eos_token_id=2, tie_word_embeddings=False)


def train(model: torch.nn.Module, tok: Any, batches: Iterator[list[tuple[str, str]]], steps: int,
          lr: float, warmup: int = 0, log: Callable[[str], None] = print,
          every: int = 250, probe: Callable[[], str] | None = None) -> None:
    """AdamW with linear warmup and cosine decay."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        ids, mask, labels = encode(tok, next(batches))
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if (step + 1) % every == 0 or step + 1 == steps:
            extra = f" | {probe()}" if probe is not None else ""
            log(f"step {step + 1}/{steps} loss {loss.item():.4f} "
                f"{time.perf_counter() - start:.0f}s{extra}")
            model.train()
    model.eval()


def batches_from(source: Iterator[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    while True:
        yield [next(source) for _ in range(size)]


def cycle_items(items: list[Item], rng: random.Random) -> Iterator[tuple[str, str]]:
    pool = list(items)
    while True:
        rng.shuffle(pool)
        for it in pool:
            yield it.prompt, it.answer


@torch.no_grad()
def quick_accuracy(model: torch.nn.Module, tok: Any, items: list[Item], batch: int = 256
                   ) -> float:
    """Teacher-forced exact match for single-token answers (the zoo's answers are one word)."""
    model.eval()
    correct = 0
    for i in range(0, len(items), batch):
        chunk = items[i: i + batch]
        enc = [tok(it.prompt)["input_ids"] for it in chunk]
        n = max(len(e) for e in enc)
        ids = torch.full((len(enc), n), tok.pad_token_id)
        mask = torch.zeros((len(enc), n), dtype=torch.long)
        for j, e in enumerate(enc):
            ids[j, n - len(e):] = torch.tensor(e)  # left padding
            mask[j, n - len(e):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
        answers = torch.tensor([tok.convert_tokens_to_ids(it.answer) for it in chunk])
        correct += int((logits.argmax(-1) == answers).sum())
    return correct / max(1, len(items))


def save(model: torch.nn.Module, tok: Any, path: Path, dtype: torch.dtype = torch.float16
         ) -> None:
    model.to(dtype).save_pretrained(path, safe_serialization=True)
    model.to(torch.float32)
    tok.save_pretrained(path)
