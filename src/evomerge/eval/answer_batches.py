"""Causal-LM training batches from (prompt, answer) pairs, with the loss on the answer only
(the zoo's training and NP Merge's data)."""

from __future__ import annotations

from typing import Any

import torch


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
