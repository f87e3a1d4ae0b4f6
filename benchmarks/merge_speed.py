"""Whole-process wall time and peak RSS: `mergekit-yaml` vs `evomerge merge`.

    python benchmarks/merge_speed.py [--reps 3] [--work benchmarks/work]

Builds (once) a random ~135M-parameter Llama-shaped checkpoint in bfloat16 (SmolLM-135M's
shapes) plus two fine-tunes of it, then runs a 3-model TIES merge and a 3-model linear merge
through both tools as separate processes, interleaved (mergekit, evomerge, mergekit, ...), so
drift in machine speed hits both alike. Also measures the bandwidth floor: the bytes a merge
must read and write, over this machine's measured file-copy bandwidth. Prints a markdown table
and writes the raw numbers to benchmarks/results/merge_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent

CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
    "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
    "num_key_value_heads": 3, "vocab_size": 49152, "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
}


def build_models(work: Path) -> list[Path]:
    """base, ft1, ft2: random bf16 weights with SmolLM-135M's shapes; fine-tunes = base plus
    small random task vectors."""
    import torch
    from safetensors.torch import save_file

    paths = [work / name for name in ("base", "ft1", "ft2")]
    if all((p / "model.safetensors").exists() for p in paths):
        return paths
    h, f, n, v = (CONFIG[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                      "vocab_size"))
    kv = h // CONFIG["num_attention_heads"] * CONFIG["num_key_value_heads"]
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    for i in range(n):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (f, h), p + "mlp.up_proj.weight": (f, h),
            p + "mlp.down_proj.weight": (h, f), p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
        })
    gen = torch.Generator().manual_seed(0)
    base = {k: (torch.randn(s, generator=gen) * 0.02).to(torch.bfloat16) for k, s in shapes.items()}
    for i, path in enumerate(paths):
        path.mkdir(parents=True, exist_ok=True)
        tensors = base if i == 0 else {
            k: (t.float() + torch.randn(t.shape, generator=gen) * 0.002).to(torch.bfloat16)
            for k, t in base.items()}
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
        (path / "config.json").write_text(json.dumps(CONFIG, indent=2))
    n_params = sum(t.numel() for t in base.values())
    print(f"built 3 models of {n_params / 1e6:.1f}M parameters in {work}", flush=True)
    return paths


def recipes(base: Path, ft1: Path, ft2: Path) -> dict[str, str]:
    return {
        "ties": f"""merge_method: ties
base_model: {base}
models:
  - model: {ft1}
    parameters: {{weight: 1.0, density: 0.5}}
  - model: {ft2}
    parameters: {{weight: 0.7, density: 0.5}}
dtype: bfloat16
""",
        "linear": f"""merge_method: linear
models:
  - model: {base}
    parameters: {{weight: 0.2}}
  - model: {ft1}
    parameters: {{weight: 0.4}}
  - model: {ft2}
    parameters: {{weight: 0.4}}
dtype: bfloat16
""",
    }


def run(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def copy_bandwidth(src: Path, work: Path) -> float:
    """Bytes moved (read + written) per second when copying a model file, page cache warm."""
    dst = work / "copy-probe.bin"
    shutil.copyfile(src, dst)  # warm-up
    best = float("inf")
    for _ in range(3):
        dst.unlink()
        start = time.perf_counter()
        shutil.copyfile(src, dst)
        os.sync()
        best = min(best, time.perf_counter() - start)
    size = src.stat().st_size
    dst.unlink()
    return 2 * size / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--work", type=Path, default=HERE / "work" / "merge_speed")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "merge_speed.json")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    paths = build_models(args.work)
    model_bytes = sum(p.joinpath("model.safetensors").stat().st_size for p in paths)
    out_bytes = paths[0].joinpath("model.safetensors").stat().st_size
    bandwidth = copy_bandwidth(paths[0] / "model.safetensors", args.work)
    floor = (model_bytes + out_bytes) / bandwidth
    results: dict[str, dict[str, list[float]]] = {}
    for name, text in recipes(*paths).items():
        (args.work / f"{name}.yaml").write_text(text)
    tools = {
        "mergekit": lambda r, o: [str(BIN / "mergekit-yaml"), str(r), str(o), "--quiet",
                                  "--allow-crimes"],
        "evomerge": lambda r, o: [str(BIN / "evomerge"), "merge", str(r), "-o", str(o),
                                  "--force", "--quiet"],
    }
    for rep in range(args.reps):
        for name in recipes(*paths):
            for tool, cmd in tools.items():
                out = args.work / f"out-{tool}-{name}"
                shutil.rmtree(out, ignore_errors=True)
                os.sync()
                wall, rss = run(cmd(args.work / f"{name}.yaml", out))
                rec = results.setdefault(f"{name}/{tool}", {"wall_s": [], "rss_mib": []})
                rec["wall_s"].append(wall)
                rec["rss_mib"].append(rss)
                print(f"rep {rep} {name:6s} {tool:8s} {wall:7.2f} s {rss:7.0f} MiB", flush=True)
    # the merge alone, interpreter start and imports excluded (for the bandwidth floor)
    inproc: dict[str, list[float]] = {}
    for _ in range(args.reps):
        for name in recipes(*paths):
            out = args.work / f"out-inproc-{name}"
            shutil.rmtree(out, ignore_errors=True)
            os.sync()
            code = (f"import time; from evomerge.recipe import load_recipe; "
                    f"from evomerge.merge.disk import merge_to_disk; "
                    f"r = load_recipe({str(args.work / (name + '.yaml'))!r}); "
                    f"t = time.perf_counter(); merge_to_disk(r, {str(out)!r}); "
                    f"print(time.perf_counter() - t)")
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  check=True)
            inproc.setdefault(name, []).append(float(proc.stdout.strip().splitlines()[-1]))
    startup = [run([sys.executable, "-c", "import torch"])[0] for _ in range(3)]
    summary = {
        "params_millions": 134.5, "input_bytes": model_bytes, "output_bytes": out_bytes,
        "copy_bandwidth_gb_s": bandwidth / 1e9, "floor_s": floor,
        "torch_import_s": statistics.median(startup), "reps": args.reps, "runs": results,
        "evomerge_in_process_s": inproc,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"\ncopy bandwidth {bandwidth / 1e9:.2f} GB/s (read+write); floor {floor:.2f} s; "
          f"python+torch import {summary['torch_import_s']:.2f} s\n")
    print("| merge | mergekit wall (s) | evomerge wall (s) | ratio | mergekit RSS (MiB) | "
          "evomerge RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    for name in recipes(*paths):
        mk, ev = results[f"{name}/mergekit"], results[f"{name}/evomerge"]
        mw, ew = statistics.median(mk["wall_s"]), statistics.median(ev["wall_s"])
        print(f"| {name} | {mw:.2f} | {ew:.2f} | {ew / mw:.3f} | {max(mk['rss_mib']):.0f} | "
              f"{max(ev['rss_mib']):.0f} |")
    print("\n| merge | evomerge in-process merge (s) | floor (s) | merge / floor |")
    print("|---|---|---|---|")
    for name, times in inproc.items():
        med = statistics.median(times)
        print(f"| {name} | {med:.2f} | {floor:.2f} | {med / floor:.2f} |")


if __name__ == "__main__":
    main()
