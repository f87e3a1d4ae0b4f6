"""Evaluation speed: evomerge's Evaluator against lm-eval's HF backend on the same model
object, the same items and the same answers (issue 12, part 4).

Setup (as in shared/notes/eval-speed.md): a randomly initialised Llama with SmolLM-135M's
shapes (hidden 576, 30 layers, 9 heads / 3 KV heads, vocabulary 49152, tied embeddings),
float32 on the CPU; a word-level tokenizer of the same vocabulary size; N items per task with
prompts of 30-60 tokens; multiple choice with 4 choices of 1-5 tokens (about half one
token); generation greedy, 16 new tokens. Both tools get the model object once and batch
size 16; lm-eval reads the items from local task YAML + JSONL. Timed: scoring only (tasks
and model built beforehand), repetitions interleaved, medians. Answers are compared item by
item.

    python benchmarks/eval_speed.py --items 200 --reps 3 --out benchmarks/results/eval_speed.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

VOCAB = 49152


def build(layers: int, seed: int = 0) -> tuple[torch.nn.Module, Any]:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + [f"w{i}" for i in range(VOCAB - 4)])}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    raw.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                       special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=576, intermediate_size=1536,
                      num_hidden_layers=layers, num_attention_heads=9, num_key_value_heads=3,
                      max_position_embeddings=2048, tie_word_embeddings=True, pad_token_id=0,
                      bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg).eval(), tok


def items(n: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(seed)

    def words(k: int) -> str:
        return " ".join(f"w{i}" for i in rng.integers(10, VOCAB - 10, k))

    mc, gen = [], []
    for _ in range(n):
        choices = [words(1 if rng.random() < 0.5 else int(rng.integers(2, 6)))
                   for _ in range(4)]
        mc.append({"prompt": words(int(rng.integers(30, 61))), "choices": choices,
                   "gold": int(rng.integers(0, 4))})
        gen.append({"prompt": words(int(rng.integers(30, 61))), "answer": words(3)})
    return mc, gen


def evomerge_tasks(mc: list[dict], gen: list[dict]) -> tuple[Any, Any]:
    """The rows as evomerge tasks: multiple choice, and generation of 16 tokens to a newline."""
    from evomerge.eval.tasks import Item, Task

    mc_task = Task("mc", tuple(Item(str(i), r["prompt"], r["choices"][r["gold"]],
                                    choices=tuple(r["choices"]))
                               for i, r in enumerate(mc)), kind="multiple_choice")
    gen_task = Task("gen", tuple(Item(str(i), r["prompt"], r["answer"])
                                 for i, r in enumerate(gen)), max_new_tokens=16,
                    stop=("\n",))
    return mc_task, gen_task


def left_pad(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows left-padded with id 0 into one batch, and its attention mask."""
    n = max(map(len, prompts))
    ids = torch.zeros((len(prompts), n), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, n - len(p):] = torch.tensor(p)
        mask[i, n - len(p):] = 1
    return ids, mask


def lm_eval_tasks(root: Path, mc: list[dict], gen: list[dict]) -> dict[str, Any]:
    from lm_eval.tasks import TaskManager

    for name, rows in (("mc", mc), ("gen", gen)):
        with (root / f"{name}.jsonl").open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    common = "dataset_path: json\ntest_split: test\ndoc_to_text: '{{prompt}}'\n"
    (root / "mc.yaml").write_text(
        f"task: speed_mc\n{common}dataset_kwargs:\n  data_files:\n    test: {root}/mc.jsonl\n"
        "output_type: multiple_choice\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: '{{gold}}'\nmetric_list:\n  - metric: acc\n")
    (root / "gen.yaml").write_text(
        f"task: speed_gen\n{common}dataset_kwargs:\n  data_files:\n    test: {root}/gen.jsonl\n"
        "output_type: generate_until\ndoc_to_target: '{{answer}}'\n"
        "generation_kwargs:\n  until: ['\\n']\n  max_gen_toks: 16\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n")
    manager = TaskManager(include_path=str(root), include_defaults=False)
    return {"mc": manager.load("speed_mc")["tasks"]["speed_mc"],
            "gen": manager.load("speed_gen")["tasks"]["speed_gen"], "manager": manager}


def run_lm_eval(lm: Any, task: Any, manager: Any) -> tuple[float, list[Any]]:
    import lm_eval

    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        out = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=manager,
                                      log_samples=True, bootstrap_iters=0)
    seconds = time.perf_counter() - start
    name = next(iter(out["samples"]))
    samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
    if task.get_config("output_type") == "multiple_choice":
        answers = [int(np.argmax([r[0] for r in s["filtered_resps"]])) for s in samples]
    else:
        answers = [str(s["filtered_resps"][0]).strip() for s in samples]
    return seconds, answers


def run_evomerge(ev: Any, task: Any, method: str = "auto") -> tuple[float, list[Any]]:
    start = time.perf_counter()
    res = ev(task, method=method)
    seconds = time.perf_counter() - start
    if task.kind == "multiple_choice":
        return seconds, [it.choices.index(o) for it, o in zip(task.items, res.outputs,
                                                             strict=True)]
    return seconds, [o.strip() for o in res.outputs]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    from lm_eval.models.huggingface import HFLM

    from evomerge.eval.evaluator import Evaluator

    model, tok = build(args.layers)
    n_params = sum(p.numel() for p in model.parameters())
    mc_rows, gen_rows = items(args.items)
    mc_task, gen_task = evomerge_tasks(mc_rows, gen_rows)
    with tempfile.TemporaryDirectory() as tmp:
        lm_tasks = lm_eval_tasks(Path(tmp), mc_rows, gen_rows)
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=16)
        times: dict[str, list[float]] = {k: [] for k in (
            "mc/evomerge", "mc/lm-eval", "gen/evomerge", "gen/lm-eval",
            "gen/evomerge-teacher-forced", "gen/evomerge-teacher-forced-checked")}
        agree: dict[str, bool] = {}
        for rep in range(args.reps):
            for kind in ("mc", "gen"):
                task = mc_task if kind == "mc" else gen_task
                ev = Evaluator(model, tok, batch_size=16)  # a fresh cache of prompt ids
                t_ev, a_ev = run_evomerge(ev, task, "auto" if kind == "mc" else "generate")
                t_lm, a_lm = run_lm_eval(lm, lm_tasks[kind], lm_tasks["manager"])
                times[f"{kind}/evomerge"].append(t_ev)
                times[f"{kind}/lm-eval"].append(t_lm)
                agree[kind] = a_ev == a_lm
                if kind == "gen":
                    # a search's evaluator checks the fast path against generation once per
                    # task (8 items generated) and then reuses it for every candidate: timed
                    # without the check (every later call) and with it (the first call)
                    warm = Evaluator(model, tok, batch_size=16)
                    warm.check_items = 0
                    t_tf, _ = run_evomerge(warm, task, "teacher_forced")
                    t_tfc, _ = run_evomerge(Evaluator(model, tok, batch_size=16), task,
                                            "teacher_forced")
                    times["gen/evomerge-teacher-forced"].append(t_tf)
                    times["gen/evomerge-teacher-forced-checked"].append(t_tfc)
                print(f"rep {rep} {kind}: evomerge {t_ev:.1f} s, lm-eval {t_lm:.1f} s, "
                      f"same answers {agree[kind]}", file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "setup": {"params": n_params, "layers": args.layers, "vocab": VOCAB,
                  "items": args.items, "reps": args.reps, "threads": args.threads,
                  "batch_size": 16, "torch": torch.__version__},
        "seconds": med,
        "items_per_s": {k: args.items / v for k, v in med.items()},
        "ratio_vs_lm_eval": {
            "mc": med["mc/lm-eval"] / med["mc/evomerge"],
            "gen": med["gen/lm-eval"] / med["gen/evomerge"],
            "gen (teacher-forced fast path)": med["gen/lm-eval"]
            / med["gen/evomerge-teacher-forced"],
            "gen (teacher-forced, first call with its check)": med["gen/lm-eval"]
            / med["gen/evomerge-teacher-forced-checked"]},
        "same_answers": agree,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
