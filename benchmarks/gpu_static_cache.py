"""Experiment: is greedy decoding on a GPU bound by kernel launches, and do transformers'
static KV cache + compiled decode step (CUDA graphs) remove that? Batch 16, 16 new tokens,
the 135M Llama of eval_speed.py in bfloat16; one batch shape, then a second shape.

    python benchmarks/gpu_static_cache.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from eval_speed import build, items, left_pad
    from gen_floor import bare

    model, tok = build(30)
    model = model.to("cuda", torch.bfloat16)
    _, gen = items(32)

    def batch(rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = left_pad([tok(r["prompt"])["input_ids"] for r in rows])
        return ids.cuda(), mask.cuda()

    def run(ids: torch.Tensor, mask: torch.Tensor, **kw: object) -> tuple[float, torch.Tensor]:
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=16,
                                 min_new_tokens=16, do_sample=False, pad_token_id=0, **kw)
        torch.cuda.synchronize()
        return time.perf_counter() - start, out

    a, b = batch(gen[:16]), batch(gen[16:])
    result: dict[str, object] = {}
    dyn = [run(*a) for _ in range(4)]
    result["dynamic_s"] = [round(t, 4) for t, _ in dyn]
    # the forward passes alone: one prefill and 15 one-token steps without generate's machinery
    torch.cuda.synchronize()
    start = time.perf_counter()
    bare(model, [a], 16)
    torch.cuda.synchronize()
    result["bare_forward_loop_s"] = round(time.perf_counter() - start, 4)
    try:
        static = [run(*a, cache_implementation="static") for _ in range(4)]
        result["static_s"] = [round(t, 4) for t, _ in static]
        result["static_same_tokens"] = bool(torch.equal(static[-1][1], dyn[-1][1]))
        other = [run(*b, cache_implementation="static") for _ in range(2)]
        result["static_other_shape_s"] = [round(t, 4) for t, _ in other]
    except Exception as exc:  # an experiment: report what failed
        result["static_error"] = f"{type(exc).__name__}: {exc}"[:500]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
