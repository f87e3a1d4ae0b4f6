"""Per-candidate cost of applying a merge: in-memory update of a live model vs writing the
merge to disk and loading it back (what Mergenetic does for every candidate).

    python benchmarks/candidate_overhead.py [--candidates 6] [--dtype float32|bfloat16]

Uses the ~135M-parameter bf16 Llama-shaped models of merge_speed.py (built if missing): a
task-arithmetic merge of two fine-tunes into the base, with new weights for every candidate.
In memory: ``LiveMerger.apply`` on a model in ``--dtype`` (evolve's ``dtype``) whose inputs
and task vectors stay in memory. Disk, three ways, each followed by
``AutoModelForCausalLM.from_pretrained``, deleting the directory and collecting garbage:
mergekit's ``run_merge`` in-process (what Mergenetic does per candidate), evomerge's own
``merge_to_disk``, and ``save_pretrained`` of the already merged live model (the disk round
trip alone). Interleaved, medians reported; results to
benchmarks/results/candidate_overhead_<dtype>.json. Every loaded model uses ``--dtype``.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main() -> None:
    import sys

    sys.path.insert(0, str(HERE))
    from merge_speed import build_models
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from evomerge.io.checkpoint import Checkpoint, TensorDictSource
    from evomerge.merge.disk import merge_to_disk
    from evomerge.merge.live import LiveMerger
    from evomerge.recipe import load_recipe

    hf_logging.disable_progress_bar()
    ap = argparse.ArgumentParser()
    ap.add_argument("--candidates", type=int, default=6)
    ap.add_argument("--work", type=Path, default=HERE / "work" / "merge_speed")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    base, ft1, ft2 = build_models(args.work)

    def recipe_dict(i: int) -> dict:
        w1, w2 = 0.3 + 0.1 * i, 0.9 - 0.1 * i
        return {"merge_method": "task_arithmetic", "base_model": str(base),
                "models": [{"model": str(ft1), "parameters": {"weight": w1}},
                           {"model": str(ft2), "parameters": {"weight": w2}}],
                "dtype": "bfloat16"}

    def recipe(i: int):
        return load_recipe(recipe_dict(i))

    def mergekit_merge(i: int, out: Path) -> None:
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions

        run_merge(MergeConfiguration.model_validate(recipe_dict(i)), str(out),
                  MergeOptions(quiet=True, copy_tokenizer=False, write_model_card=False))

    t0 = time.perf_counter()
    sources = {}
    for path in (base, ft1, ft2):
        ck = Checkpoint(path)
        sources[str(path)] = TensorDictSource({k: ck.get(k).to(dtype) for k in ck.names()},
                                              str(path), ck.config)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    merger = LiveMerger(model, sources, dtype=dtype)
    merger.apply(recipe(99))  # computes the task vectors once
    setup = time.perf_counter() - t0
    live, mk, disk, hf = [], [], [], []
    out = args.work / "candidate-roundtrip"

    def roundtrip(write) -> float:
        start = time.perf_counter()
        write()
        loaded = AutoModelForCausalLM.from_pretrained(out, dtype=dtype)
        del loaded
        shutil.rmtree(out)
        gc.collect()
        return time.perf_counter() - start

    for i in range(args.candidates):
        live.append(merger.apply(recipe(i)))
        mk.append(roundtrip(lambda i=i: mergekit_merge(i, out)))
        disk.append(roundtrip(lambda i=i: merge_to_disk(recipe(i), out, force=True)))
        # the same merge (already in the live model) through save_pretrained + from_pretrained
        hf.append(roundtrip(lambda: model.save_pretrained(out)))
        print(f"candidate {i}: in-memory {live[-1]:.3f} s, mergekit + load {mk[-1]:.3f} s, "
              f"merge_to_disk + load "
              f"{disk[-1]:.3f} s, save_pretrained + from_pretrained {hf[-1]:.3f} s", flush=True)
    result = {"dtype": args.dtype,
              "params_millions": sum(p.numel() for p in model.parameters()) / 1e6,
              "setup_s": setup, "in_memory_s": live, "disk_roundtrip_s": disk,
              "median_in_memory_s": statistics.median(live),
              "mergekit_roundtrip_s": mk, "median_mergekit_s": statistics.median(mk),
              "ratio_vs_mergekit": statistics.median(mk) / statistics.median(live),
              "median_disk_s": statistics.median(disk),
              "hf_roundtrip_s": hf, "median_hf_roundtrip_s": statistics.median(hf),
              "ratio": statistics.median(hf) / statistics.median(live),
              "ratio_vs_merge_to_disk": statistics.median(disk) / statistics.median(live)}
    (HERE / "results").mkdir(exist_ok=True)
    path = HERE / "results" / f"candidate_overhead_{args.dtype}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"median in-memory {result['median_in_memory_s']:.3f} s; mergekit run_merge + "
          f"from_pretrained {result['median_mergekit_s']:.3f} s "
          f"({result['ratio_vs_mergekit']:.1f}x); save_pretrained + "
          f"from_pretrained {result['median_hf_roundtrip_s']:.3f} s ({result['ratio']:.1f}x); "
          f"merge_to_disk + from_pretrained {result['median_disk_s']:.3f} s "
          f"({result['ratio_vs_merge_to_disk']:.1f}x); one-off setup {setup:.1f} s")


if __name__ == "__main__":
    main()
