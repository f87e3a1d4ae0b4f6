"""Build the demo zoo: a base trained on every language and experts fine-tuned from it.

``evomerge zoo build`` runs this with the recorded recipe (``ZOO_RECIPE``); the result is
committed, so users and tests load it and never train.
"""

from __future__ import annotations

import copy
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from evomerge.errors import ModelError
from evomerge.io.outdir import check_replaceable, check_target, output_dir
from evomerge.zoo.data import base_corpus, expert_corpus, task_items
from evomerge.zoo.manifest import write_manifest
from evomerge.zoo.train import (
    batches_from,
    model_config,
    quick_accuracy,
    save,
    train,
    word_tokenizer,
)

ZOO_RECIPE: dict[str, Any] = {
    "seed": 0,
    "threads": 2,
    "model": {"hidden": 128, "layers": 4},
    "base": {"steps": 4000, "batch": 128, "lr": 1e-3, "warmup": 200},
    # the base never sees Italian, nor any question: only number dictionaries and symbolic
    # arithmetic/comparison with English, German or digit operands (docs/zoo.md says why)
    "base_data": {"dict_langs": ["en", "de"], "operand_langs": ["en", "de"], "qa_tasks": []},
    "experts": {
        "math_en": {"tasks": ["add_en"]},
        "lang_it": {"tasks": [], "dictionary": "it", "symbolic": "it", "steps": 300,
                    "lr": 1e-3},
        "compare_en": {"tasks": ["max_en"]},
    },
    "expert_training": {"steps": 150, "batch": 64, "lr": 3e-4},
}

PROBE_TASKS = ["add_en", "add_it", "max_en", "max_it", "num_it"]


def build_zoo(out: Path, recipe: dict[str, Any] | None = None,
              log: Callable[[str], None] = print, base_from: Path | None = None
              ) -> dict[str, Path]:
    """Train and save every zoo model under ``out`` (a new directory, written atomically) and
    its checksum manifest; returns name -> checkpoint path.

    ``base_from``: reuse the base checkpoint of an existing zoo built with the same base
    recipe and train only the experts (minutes instead of a quarter of an hour). Experts are
    always fine-tuned from the saved float16 base, as real fine-tunes start from a published
    checkpoint, so the result is the same as a full build."""
    recipe = recipe or ZOO_RECIPE
    out = Path(out).resolve()
    check_target(out)
    if out.exists():
        check_replaceable(out)  # only a zoo evomerge wrote, or an empty directory
    with output_dir(out, "zoo") as tmp:
        if base_from is not None:
            _check_same_base(Path(base_from), recipe)
            shutil.copytree(Path(base_from) / "base", tmp / "base")
        paths = _train_all(tmp, recipe, log, train_base=base_from is None)
        write_manifest(tmp, recipe, list(paths))
    return {name: out / name for name in paths}


BASE_KEYS = ("seed", "threads", "model", "base", "base_data")


def _check_same_base(zoo: Path, recipe: dict[str, Any]) -> None:
    from evomerge.zoo.manifest import read_manifest

    old = read_manifest(zoo)["recipe"]
    differ = [k for k in BASE_KEYS if old.get(k) != recipe.get(k)]
    if differ:
        raise ModelError(f"the base in {zoo} was built with a different {', '.join(differ)}; "
                         "rebuild the whole zoo")


def _train_all(out: Path, recipe: dict[str, Any], log: Callable[[str], None],
               train_base: bool = True) -> dict[str, Path]:
    r = copy.deepcopy(recipe)
    torch.set_num_threads(r["threads"])
    tok = word_tokenizer()
    from transformers import LlamaForCausalLM

    probe_items = {t: task_items(t, "search")[:120] for t in PROBE_TASKS}

    def probe(model: torch.nn.Module) -> Callable[[], str]:
        return lambda: " ".join(f"{t} {quick_accuracy(model, tok, it):.2f}"
                                for t, it in probe_items.items())

    paths = {"base": out / "base"}
    if train_base:
        torch.manual_seed(r["seed"])
        rng = random.Random(r["seed"])
        base = LlamaForCausalLM(model_config(len(tok), **r["model"]))
        b = r["base"]
        log(f"base: {sum(p.numel() for p in base.parameters()) / 1e6:.2f}M parameters")
        d = r["base_data"]
        corpus = base_corpus(rng, tuple(d["dict_langs"]), tuple(d["operand_langs"]),
                             tuple(d["qa_tasks"]))
        train(base, tok, batches_from(corpus, b["batch"]), b["steps"], b["lr"],
              warmup=b["warmup"], log=log, every=500, probe=probe(base))
        save(base, tok, paths["base"])
    defaults = r["expert_training"]
    for name, spec in r["experts"].items():
        if isinstance(spec, list):  # shorthand: a list of task names
            spec = {"tasks": spec}
        e = {**defaults, **{k: v for k, v in spec.items() if k in defaults}}
        # from the saved base, with its own random stream: an expert does not depend on the
        # others or on their order
        model = LlamaForCausalLM.from_pretrained(paths["base"], dtype=torch.float32)
        torch.manual_seed(r["seed"])
        rng = random.Random(f"{r['seed']}:{name}")
        items = [it for t in spec.get("tasks", []) for it in task_items(t, "train")]
        log(f"expert {name}: {len(items)} question items from {spec.get('tasks', [])}"
            + (f", {spec['dictionary']} dictionary" if spec.get("dictionary") else "")
            + (f", {spec['symbolic']} symbolic number work" if spec.get("symbolic") else ""))
        corpus = expert_corpus(rng, items, spec.get("dictionary"), spec.get("symbolic"))
        train(model, tok, batches_from(corpus, e["batch"]), e["steps"], e["lr"], log=log,
              every=e["steps"], probe=probe(model))
        paths[name] = out / name
        save(model, tok, paths[name])
    return paths
