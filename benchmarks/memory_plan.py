"""The memory plan (evomerge/memory.py) against the measured peak memory of real searches, and
what fits on 24, 48 and 80 GB GPUs for 7B and 8B models.

    python benchmarks/memory_plan.py [--work benchmarks/work/memory_plan]

Measured: ``evomerge evolve`` in a subprocess over three ~135M-parameter Llama-shaped models
(SmolLM-135M's shapes, random weights: base and two fine-tunes, bf16 on disk) with a word-level
tokenizer of 49152 tokens, on a small generative task from files; the peak resident set
size of that process (``ru_maxrss`` of the child) against the host total the plan printed.
Several settings: float32 and bfloat16 searches, task arithmetic (task vectors kept) and TIES
(none kept). Computed: the plan of a search over Llama-2-7B- and Llama-3-8B-shaped models
(headers only, nothing allocated) for 2 and 3 input models besides the base. Results to
benchmarks/results/memory_plan.json; table in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def tokenizer(vocab_size: int):  # noqa: ANN201
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + [f"w{i}" for i in range(vocab_size - 4)])}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def task_files(work: Path) -> tuple[Path, Path]:
    import random

    rng = random.Random(0)
    paths = []
    for split, n in (("search", 40), ("test", 20)):
        rows = []
        for i in range(n):
            words = [f"w{rng.randrange(1000)}" for _ in range(24)]
            rows.append({"id": f"{split}{i}", "prompt": " ".join(words), "answer": words[3]})
        path = work / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(path)
    return paths[0], paths[1]


def measure(work: Path, models: list[Path], dtype: str, method: str) -> dict:
    import yaml

    search, test = task_files(work)
    run_dir = work / f"run_{dtype}_{method}"
    cfg = {"base_model": str(models[0]), "models": [str(m) for m in models[1:]],
           "merge_method": method, "space": {"type": "per_model"},
           "tasks": [{"name": "copy", "search": str(search), "test": str(test),
                      "options": {"max_new_tokens": 4}}],
           "fitness": {"subset_size": 10, "estimator": "mean"},
           "optimizer": {"name": "ga", "pop_size": 4, "generations": 1},
           "final": {"top_k": 2, "baselines": False}, "dtype": dtype, "batch_size": 16,
           "run_dir": str(run_dir), "seed": 0}
    path = work / f"{dtype}_{method}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = subprocess.run([str(BIN / "evomerge"), "evolve", str(path), "--fresh", "-q"],
                         capture_output=True, text=True, check=True).stdout
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    assert before * 1024 < peak, "an earlier child had a larger peak: run one setting per call"
    line = next(ln for ln in out.splitlines() if ln.startswith("memory plan:"))
    total = re.search(r"host ([0-9.]+) (GB|MB)", line)
    assert total is not None
    planned = float(total.group(1)) * (1024**3 if total.group(2) == "GB" else 1024**2)
    return {"dtype": dtype, "method": method, "plan_line": line,
            "planned_gb": round(planned / 1024**3, 3), "measured_gb": round(peak / 1024**3, 3),
            "measured_over_plan": round(peak / planned, 3)}


def measure_npmerge(work: Path, models: list[Path]) -> dict:
    import yaml

    search, test = task_files(work)
    cfg = {"models": [str(models[1]), str(models[2])], "data": {"file": str(search)},
           "steps": 2, "batch_size": 8, "granularity": "parameter",
           "output": str(work / "np_merged")}
    path = work / "np_merge.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([str(BIN / "evomerge"), "np-merge", str(path), "--force", "-q"],
                         capture_output=True, text=True, check=True).stdout
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    line = next(ln for ln in out.splitlines() if ln.startswith("memory plan:"))
    total = re.search(r"host ([0-9.]+) (GB|MB)", line)
    assert total is not None
    planned = float(total.group(1)) * (1024**3 if total.group(2) == "GB" else 1024**2)
    return {"job": "np-merge", "plan_line": line, "planned_gb": round(planned / 1024**3, 3),
            "measured_gb": round(peak / 1024**3, 3),
            "measured_over_plan": round(peak / planned, 3)}


SHAPES = {
    "Llama-2-7B": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                       tie_word_embeddings=False),
    "Llama-3-8B": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       tie_word_embeddings=False),
}


def big_plans() -> list[dict]:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from evomerge.io.checkpoint import TensorDictSource
    from evomerge.memory import GB, search_plan

    rows = []
    for name, shape in SHAPES.items():
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(LlamaConfig(**shape), dtype=torch.bfloat16)
        state = model.state_dict()
        config = {**shape, "model_type": "llama"}
        for n_models in (2, 3):
            sources = {f"m{i}": TensorDictSource(state, f"m{i}", config)
                       for i in range(n_models + 1)}
            for dtype in ("float32", "bfloat16"):
                for offload in (False, True):
                    plan = search_plan(sources, device="cuda", dtype=dtype, offload=offload,
                                       reuses_task_vectors=True, batch_size=16, seq_len=1024)
                    dev = plan.total("device") / GB
                    rows.append({"model": name, "models": n_models, "dtype": dtype,
                                 "offload": offload, "device_gb": round(dev, 1),
                                 "host_gb": round(plan.total("host") / GB, 1),
                                 "fits": {g: dev <= g * 0.95 for g in (24, 48, 80)}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=HERE / "work" / "memory_plan")
    ap.add_argument("--setting", help="dtype:method, one measured search (internal)")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from merge_speed import build_models

    work = args.work
    models = build_models(HERE / "work" / "merge_speed")
    for m in models:
        if not (m / "tokenizer.json").exists():
            tokenizer(49152).save_pretrained(m)
    work.mkdir(parents=True, exist_ok=True)
    if args.setting:  # each measurement in its own process: ru_maxrss of children is a max
        if args.setting == "np-merge":
            print(json.dumps(measure_npmerge(work, models)))
            return
        dtype, method = args.setting.split(":")
        print(json.dumps(measure(work, models, dtype, method)))
        return
    measured = []
    for setting in ("float32:task_arithmetic", "bfloat16:task_arithmetic", "float32:ties",
                    "np-merge"):
        out = subprocess.run([sys.executable, __file__, "--work", str(work), "--setting",
                              setting], capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(row, flush=True)
        measured.append(row)
    result = {"measured": measured, "plans": big_plans()}
    out_path = HERE / "results" / "memory_plan.json"
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    for r in result["plans"]:
        print(r)


if __name__ == "__main__":
    main()
