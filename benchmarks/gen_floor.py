"""How much of greedy generation is the model's forward passes? The floor under any tool's
generation speed (issue 12's 2x target for free-form generation).

eval_speed.py's model and generative items on the CPU: evomerge's Evaluator (transformers'
``generate``) against a bare loop that runs only the forward passes generation needs (one
prefill computing the last position's logits, then one-token steps on the KV cache, argmax)
on the same length-sorted batches of 16, the same 16 new tokens. Interleaved, medians.

    python benchmarks/gen_floor.py --items 96 --reps 3   # benchmarks/results/gen_floor.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


@torch.no_grad()
def bare(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
         new: int) -> list[list[int]]:
    rows: list[list[int]] = []
    for ids, mask in batches:
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                    logits_to_keep=1)
        cache, toks = out.past_key_values, []
        nxt, p = out.logits[:, -1].argmax(-1), pos[:, -1:] + 1
        toks.append(nxt)
        for _ in range(new - 1):
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=p,
                        past_key_values=cache, use_cache=True)
            nxt, p = out.logits[:, -1].argmax(-1), p + 1
            toks.append(nxt)
        rows += torch.stack(toks, 1).tolist()
    return rows


def main() -> None:
    from eval_speed import build, items, left_pad

    from evomerge.eval.evaluator import Evaluator
    from evomerge.eval.tasks import Item, Task

    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=96)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = build(30)
    _, gen = items(args.items)
    task = Task("gen", tuple(Item(str(i), r["prompt"], r["answer"]) for i, r in enumerate(gen)),
                max_new_tokens=16)
    prompts = [tok(r["prompt"])["input_ids"] for r in gen]
    order = sorted(range(len(prompts)), key=lambda k: -len(prompts[k]))
    batches = [left_pad([prompts[k] for k in order[s: s + 16]])
               for s in range(0, len(order), 16)]
    times: dict[str, list[float]] = {"generate": [], "forward passes only": []}
    for _ in range(args.reps):
        start = time.perf_counter()
        res = Evaluator(model, tok, batch_size=16)(task, method="generate")
        times["generate"].append(time.perf_counter() - start)
        start = time.perf_counter()
        rows = bare(model, batches, 16)
        times["forward passes only"].append(time.perf_counter() - start)
    texts = [tok.decode(r, skip_special_tokens=True) for r in rows]
    by_item = dict(zip(order, texts, strict=True))
    same = [by_item[i] for i in range(len(gen))] == res.outputs
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({"items": args.items, "reps": args.reps, "seconds": med,
                      "forward_share": med["forward passes only"] / med["generate"],
                      "same_tokens": same}, indent=1))


if __name__ == "__main__":
    main()
