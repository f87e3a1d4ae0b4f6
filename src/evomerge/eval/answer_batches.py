"""Causal-LM training batches from (prompt, answer) pairs, with the loss on the answer only
(the zoo's training and NP Merge's data)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from evomerge.eval.tasks import Item, Task


def encode_answers(tok: Any, pairs: list[tuple[str, str]]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (answer + eos only)."""
    rows, labels = [], []
    for prompt, answer in pairs:
        p = tok(prompt, add_special_tokens=True)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append(p + a)
        labels.append([-100] * len(p) + a)
    n = max(len(r) for r in rows)
    ids = torch.full((len(rows), n), tok.pad_token_id)
    lab = torch.full((len(rows), n), -100)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, (r, la) in enumerate(zip(rows, labels, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        lab[i, : len(la)] = torch.tensor(la)
        mask[i, : len(r)] = 1
    return ids, mask, lab


def task_batches(tok: Any, task: Task, items: Sequence[Item], size: int
                 ) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of ``size`` items, (prompt, delimiter + answer), in the order given: the
    answer spelled as the evaluator scores it (``prompts.continuation``)."""
    from evomerge.eval.prompts import continuation

    pairs = [(it.prompt, continuation(task, it.prompt, it.answer)) for it in items]
    for i in range(0, len(pairs), size):
        ids, mask, labels = encode_answers(tok, pairs[i:i + size])
        yield {"input_ids": ids, "attention_mask": mask, "labels": labels}
