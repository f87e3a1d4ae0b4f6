"""The GPU paths, measured side by side with the same machine's CPU (docs/benchmarks.md,
"On a GPU"). Run on a CUDA machine:

    python benchmarks/gpu.py --out benchmarks/results/gpu.json

1. ``merge_to_disk`` of the 135M bf16 checkpoints of merge_speed.py (TIES and linear),
   device cuda against cpu, and the largest difference between the two outputs.
2. Per-candidate live merge (``LiveMerger.apply``) of those checkpoints: task arithmetic,
   TIES and DARE-TIES, new weights each candidate, cuda against cpu.
3. Evaluation: evomerge's Evaluator against lm-eval's HF backend on the same model object
   and items (eval_speed.py's setup: 200 items, multiple choice and 16-token generation),
   batch 16, on the GPU in bfloat16: the 135M Llama and a 1.1B one (TinyLlama's shapes);
   answers compared item by item. Also ``batch_size: auto``'s choice for each model.
4. np-merge on the committed zoo: seconds per optimiser step, cuda against cpu.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def timed(fn: Any, sync: bool = True) -> float:
    if sync and torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if sync and torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def merge_section(work: Path, reps: int) -> dict[str, Any]:
    from merge_speed import build_models

    from evomerge.io.checkpoint import Checkpoint
    from evomerge.merge.disk import merge_to_disk
    from evomerge.recipe import load_recipe

    base, ft1, ft2 = build_models(work)
    recipes = {
        "ties": {"merge_method": "ties", "base_model": str(base),
                 "models": [{"model": str(m), "parameters": {"weight": 1.0, "density": 0.5}}
                            for m in (ft1, ft2)], "dtype": "bfloat16"},
        "linear": {"merge_method": "linear",
                   "models": [{"model": str(m), "parameters": {"weight": 1.0}}
                              for m in (base, ft1, ft2)], "dtype": "bfloat16"},
    }
    out: dict[str, Any] = {}
    for name, r in recipes.items():
        recipe = load_recipe(r)
        times: dict[str, list[float]] = {"cpu": [], "cuda": []}
        for _ in range(reps):
            for dev in ("cpu", "cuda"):
                times[dev].append(timed(lambda dev=dev, r=recipe: merge_to_disk(
                    r, work / f"out-{dev}", device=dev, force=True)))
        a, b = Checkpoint(work / "out-cpu"), Checkpoint(work / "out-cuda")
        diff = max(float((a.get(k).float() - b.get(k).float()).abs().max()) for k in a.names())
        out[name] = {"cpu_s": statistics.median(times["cpu"]),
                     "cuda_s": statistics.median(times["cuda"]), "max_abs_diff": diff}
        print(f"merge {name}: cpu {out[name]['cpu_s']:.2f} s, cuda {out[name]['cuda_s']:.2f} s,"
              f" max |diff| {diff:.2e}", flush=True)
    return out


def live_section(work: Path, candidates: int) -> dict[str, Any]:
    from merge_speed import build_models
    from transformers import AutoModelForCausalLM

    from evomerge.io.checkpoint import Checkpoint, TensorDictSource
    from evomerge.merge.live import LiveMerger
    from evomerge.recipe import load_recipe

    base, ft1, ft2 = build_models(work)

    def recipe(method: str, i: int):
        w1, w2 = 0.3 + 0.1 * i, 0.9 - 0.1 * i
        extra = {"density": 0.5} if method != "task_arithmetic" else {}
        return load_recipe({"merge_method": method, "base_model": str(base),
                            "models": [{"model": str(ft1), "parameters": {"weight": w1, **extra}},
                                       {"model": str(ft2), "parameters": {"weight": w2, **extra}}],
                            "dtype": "bfloat16"})

    out: dict[str, Any] = {}
    for dtype in (torch.bfloat16, torch.float32):
        for dev in ("cpu", "cuda"):
            sources = {}
            for path in (base, ft1, ft2):
                ck = Checkpoint(path)
                sources[str(path)] = TensorDictSource(
                    {k: ck.get(k).to(dev, dtype) for k in ck.names()}, str(path), ck.config)
            model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype).to(dev)
            merger = LiveMerger(model, sources, dtype=dtype)
            for method in ("task_arithmetic", "ties", "dare_ties"):
                merger.apply(recipe(method, 99))  # task vectors, warm-up
                ts = [timed(lambda m=method, i=i, mg=merger: mg.apply(recipe(m, i)))
                      for i in range(candidates)]
                key = f"{method}/{str(dtype).removeprefix('torch.')}/{dev}"
                out[key] = statistics.median(ts)
                print(f"live {key}: {out[key] * 1000:.1f} ms per candidate", flush=True)
            del model, merger, sources
            torch.cuda.empty_cache()
    return out


def eval_section(items: int, reps: int) -> dict[str, Any]:
    import logging

    from eval_speed import build, evomerge_tasks, lm_eval_tasks, run_evomerge, run_lm_eval
    from eval_speed import items as make_items
    from lm_eval.models.huggingface import HFLM
    from transformers import LlamaConfig, LlamaForCausalLM

    from evomerge.eval.evaluator import Evaluator
    from evomerge.io.checkpoint import TensorDictSource
    from evomerge.memory import auto_batch_size, available, longest_sequence, search_plan

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    small, tok = build(30)
    torch.manual_seed(0)
    big = LlamaForCausalLM(LlamaConfig(
        vocab_size=small.config.vocab_size, hidden_size=2048, intermediate_size=5632,
        num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
        max_position_embeddings=2048, tie_word_embeddings=False, pad_token_id=0,
        bos_token_id=1, eos_token_id=2)).eval()
    mc_rows, gen_rows = make_items(items)
    mc_task, gen_task = evomerge_tasks(mc_rows, gen_rows)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        lm_tasks = lm_eval_tasks(Path(tmp), mc_rows, gen_rows)
        for label, model in (("135M", small), ("1.1B", big)):
            model = model.to("cuda", torch.bfloat16)
            params = sum(p.numel() for p in model.parameters())
            lm = HFLM(pretrained=model, tokenizer=tok, batch_size=16)
            times: dict[str, list[float]] = {}
            agree = {}
            for _ in range(reps):
                for kind, task in (("mc", mc_task), ("gen", gen_task)):
                    t_ev, a_ev = run_evomerge(Evaluator(model, tok, batch_size=16), task,
                                              "auto" if kind == "mc" else "generate")
                    t_lm, a_lm = run_lm_eval(lm, lm_tasks[kind], lm_tasks["manager"])
                    times.setdefault(f"{kind}/evomerge", []).append(t_ev)
                    times.setdefault(f"{kind}/lm-eval", []).append(t_lm)
                    agree[kind] = sum(a == b for a, b in zip(a_ev, a_lm, strict=True)) / items
            med = {k: statistics.median(v) for k, v in times.items()}
            # `batch_size: auto` as a search over this model and two fine-tunes of it takes
            # it (search_plan at batch 1, the GPU's free memory), and the peak it reaches
            state = model.state_dict()
            source = TensorDictSource(state, label, model.config.to_dict())
            sources = {f"m{i}": source for i in range(3)}
            seq = longest_sequence([mc_task, gen_task], tok)
            at_one = search_plan(sources, device="cuda", dtype="bfloat16", offload=False,
                                 reuses_task_vectors=True, batch_size=1, seq_len=seq)
            auto = auto_batch_size(at_one, available("cuda"))
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            t_auto, _ = run_evomerge(Evaluator(model, tok, batch_size=auto), mc_task)
            peak = torch.cuda.max_memory_allocated() - before
            t_auto_gen, _ = run_evomerge(Evaluator(model, tok, batch_size=auto), gen_task,
                                         "generate")
            planned = at_one.parts["device"]["evaluation"] * auto
            out[label] = {"params": params, "seconds": med,
                          "items_per_s": {k: items / v for k, v in med.items()},
                          "ratio_vs_lm_eval": {k: med[f"{k}/lm-eval"] / med[f"{k}/evomerge"]
                                               for k in ("mc", "gen")},
                          "same_answers": agree, "auto_batch_size": auto,
                          "mc_items_per_s_at_auto": items / t_auto,
                          "gen_items_per_s_at_auto": items / t_auto_gen,
                          "auto_eval_peak_gb": peak / 1e9, "auto_eval_planned_gb": planned / 1e9}
            print(f"eval {label}: " + json.dumps(out[label]), flush=True)
            model.to("cpu")
            del lm
            torch.cuda.empty_cache()
    return out


def np_merge_section(tmp: Path) -> dict[str, Any]:
    from evomerge.config import NPMergeConfig
    from evomerge.npmerge.job import np_merge
    from evomerge.zoo.manifest import ZOO_DIR

    out = {}
    for dev in ("cpu", "cuda"):
        cfg = NPMergeConfig.model_validate({
            "models": [str(ZOO_DIR / "math_en"), str(ZOO_DIR / "lang_it")],
            "data": {"zoo": "add_it", "split": "search", "limit": 240},
            "steps": 40, "lr": 0.05, "batch_size": 32, "device": dev,
            "validation_fraction": 0, "output": str(tmp / f"np-{dev}")})
        seconds = timed(lambda cfg=cfg: np_merge(cfg))
        out[dev] = {"seconds_40_steps": seconds}
        print(f"np-merge {dev}: {seconds:.2f} s for 40 steps", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=HERE / "work" / "merge_speed")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--candidates", type=int, default=5)
    ap.add_argument("--only", nargs="*", default=["merge", "live", "eval", "np"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures the GPU paths")
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(0),
                              "torch": torch.__version__, "cpu_threads": torch.get_num_threads()}
    sections = {"merge": lambda: merge_section(args.work, args.reps),
                "live": lambda: live_section(args.work, args.candidates),
                "eval": lambda: eval_section(args.items, args.reps),
                "np": lambda: np_merge_section(Path(tempfile.mkdtemp()))}
    for name in args.only:
        try:
            result[name] = sections[name]()
        except Exception as exc:  # one section failing must not lose the others' figures
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"{name} failed: {exc!r}", flush=True)
        if args.out:
            args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
