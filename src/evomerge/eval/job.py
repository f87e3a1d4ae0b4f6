"""``evomerge eval``: score checkpoints, LoRA adapters or merge recipes on the evolve task
schema, with what a search's final table shows (item counts, 95 % intervals, and each model
against the first on the same items). The way to look at a model's answers when a search
says its scores are 0, and to score a merge without writing Python.

Every model and task is checked before the first evaluation; a recipe is merged in memory
into its base (through a temporary directory only when it changes the vocabulary or stacks
layers); one model is held at a time.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from evomerge.config import TaskConfig
from evomerge.errors import ConfigError
from evomerge.eval.evaluator import Evaluator
from evomerge.eval.prompts import render
from evomerge.eval.sources import load_task_pair
from evomerge.eval.tasks import Task
from evomerge.stats import paired, wilson

Split = Literal["search", "test"]


@dataclass
class TaskScore:
    accuracy: float
    n: int
    right: int
    interval: tuple[float, float]  # 95 % Wilson interval
    correct: dict[str, int]  # item id -> 0/1
    outputs: dict[str, str] = field(default_factory=dict)  # item id -> what was judged


@dataclass
class ModelScores:
    label: str
    path: str
    tasks: dict[str, TaskScore]
    notes: list[str] = field(default_factory=list)  # what the evaluator adapted or found


@dataclass
class EvalReport:
    split: str
    models: list[ModelScores]
    comparisons: list[dict[str, Any]]  # each model against the first, item by item

    def to_json(self) -> dict[str, Any]:
        return {"split": self.split, "comparisons": self.comparisons,
                "models": [{"label": m.label, "path": m.path, "notes": m.notes, "tasks": {
                    t: {"accuracy": s.accuracy, "n": s.n, "right": s.right,
                        "interval": list(s.interval), "correct": s.correct,
                        "outputs": s.outputs} for t, s in m.tasks.items()}}
                           for m in self.models]}


def _is_recipe(path: str) -> bool:
    return Path(path).is_file() and Path(path).suffix in (".yaml", ".yml")


def _check_path(path: str) -> None:
    from evomerge.errors import ModelError
    from evomerge.io.lora import split_reference

    if _is_recipe(path):
        from evomerge.recipe import load_recipe

        load_recipe(path)
    elif split_reference(path) is None and not Path(path).is_dir():
        raise ModelError(f"model {path!r}: not a model directory, an adapter or a recipe "
                         "YAML")


def _load(path: str, dtype: torch.dtype, device: torch.device, seed: int
          ) -> tuple[torch.nn.Module, Any]:
    """(model, tokenizer) for a checkpoint, an adapter (BASE+ADAPTER too) or a recipe."""
    from evomerge.io.hf import load_causal_lm, load_tokenizer
    from evomerge.io.lora import LoraSource, open_model

    if not _is_recipe(path):
        model = load_causal_lm(path, dtype)
        source = open_model(path)
        tok_dir = path
        if isinstance(source, LoraSource) and not (Path(source.adapter) / "tokenizer_config"
                                                   ".json").exists():
            tok_dir = str(source.path)  # an adapter without its own tokenizer: the base's
        return model.to(device).eval(), load_tokenizer(tok_dir)
    from evomerge.merge.disk import merge_to_disk, open_sources
    from evomerge.merge.planner import MergePlan
    from evomerge.merge.registry import get_method
    from evomerge.recipe import load_recipe

    recipe = load_recipe(path)
    stacks = recipe.merge_method == "passthrough" and bool(recipe.slices)
    if (recipe.tokenizer_source or recipe.tokenizer or recipe.chat_template or stacks
            or get_method(recipe.merge_method).statistics):
        with tempfile.TemporaryDirectory(prefix="evomerge-eval-") as tmp:
            out = merge_to_disk(recipe, Path(tmp) / "merged", seed=seed)
            return load_causal_lm(out, dtype).to(device).eval(), load_tokenizer(out)
    donor = recipe.base_model or recipe.referenced_models()[0]
    model = load_causal_lm(donor, dtype).to(device).eval()
    MergePlan.build(recipe, open_sources(recipe), seed=seed).merge_into(model)
    return model, load_tokenizer(donor)


def eval_models(paths: Sequence[str], tasks: Sequence[TaskConfig], *, split: Split = "test",
                device: str = "cpu", dtype: str = "float32", batch_size: int = 16,
                seed: int = 0, log: Callable[[str], None] | None = None) -> EvalReport:
    """Each of ``paths`` scored on ``split`` of every task (``evomerge eval``)."""
    from evomerge.device import resolve_device

    if not paths:
        raise ConfigError("give at least one model, adapter or recipe to evaluate")
    if split not in ("search", "test"):
        raise ConfigError(f"split must be search or test, got {split!r}")
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ConfigError(f"unknown dtype {dtype!r} (float32, bfloat16, float16)")
    dev = resolve_device(device)
    for p in paths:  # every input and task checked before the first model is loaded
        _check_path(str(p))
    loaded = {t.name: load_task_pair(t) for t in tasks}
    chosen = {name: pair[0 if split == "search" else 1] for name, pair in loaded.items()}
    labels = _labels([str(p) for p in paths])
    out: list[ModelScores] = []
    for path, label in zip(paths, labels, strict=True):
        if log:
            log(f"evaluating {label} on the {split} split of {', '.join(chosen)}")
        model, tok = _load(str(path), torch_dtype, dev, seed)
        evaluator = Evaluator(model, tok, batch_size=batch_size)
        scores: dict[str, TaskScore] = {}
        for t in tasks:
            scores[t.name] = _score(evaluator, t, chosen[t.name], split)
        out.append(ModelScores(label, str(path), scores, list(evaluator.notes)))
        del model, evaluator
    comparisons = []
    for other in out[1:]:
        cmp = paired({t: s.correct for t, s in other.tasks.items()},
                     {t: s.correct for t, s in out[0].tasks.items()}, out[0].label)
        comparisons.append({"model": other.label, **cmp.as_dict(),
                            "sentence": cmp.sentence(split, other.label)})
    return EvalReport(split, out, comparisons)


def _score(evaluator: Evaluator, t: TaskConfig, task: Task, split: Split) -> TaskScore:
    if t.lm_eval:
        from evomerge.eval.lm_eval_adapter import _import
        from evomerge.eval.sources.lm_eval import lm_eval_task

        lm = _import()[1](pretrained=evaluator.model, tokenizer=evaluator.tok,
                          batch_size=evaluator.batch_size)
        res = lm_eval_task(t).evaluate(lm, split, None)
    else:
        if task.items:  # a chat template the tokenizer lacks: one line, before any work
            render(task, task.items[0], evaluator.tok)
        res = evaluator(task)
    correct = np.asarray(res.correct, dtype=int)
    right, n = int(correct.sum()), len(correct)
    return TaskScore(float(correct.mean()) if n else float("nan"), n, right, wilson(right, n),
                     dict(zip(res.ids, correct.tolist(), strict=True)),
                     dict(zip(res.ids, res.outputs, strict=True)) if res.outputs else {})


def _labels(paths: list[str]) -> list[str]:
    """Short names: the folder (or recipe file) name, the parent added where two clash."""
    short = [Path(p.rstrip("/")).name or p for p in paths]
    return [s if short.count(s) == 1 else str(Path(p).parent.name + "/" + s)
            for s, p in zip(short, paths, strict=True)]
