"""``evomerge np-merge``: NP Merge of causal LMs on a task's items, written as a checkpoint.

The models share one architecture (fine-tunes of one base need no alignment); the loss is
the LM loss on the answers of the training items. The merged model is written to a
temporary directory beside the output and renamed into place; with a test task, every
endpoint and the merge are scored on it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from evomerge.config import NPMergeConfig
from evomerge.device import resolve_device
from evomerge.errors import ConfigError, ModelError
from evomerge.eval.answer_batches import task_batches
from evomerge.eval.sources import load_data
from evomerge.eval.tasks import Task
from evomerge.io.checkpoint import Checkpoint, require_finite
from evomerge.io.hf import load_causal_lm, load_tokenizer
from evomerge.io.lora import is_adapter, open_model, split_reference
from evomerge.io.outdir import ensure_space, output_dir, write_error
from evomerge.io.writer import prepare_output
from evomerge.memory import available, check_fits, longest_sequence, npmerge_plan
from evomerge.merge.vocab import aligned_inputs, load_aligned_model
from evomerge.npmerge.learn import Progress, lm_entropy_loss, lm_loss, np_merge_modules


@dataclass
class NPMergeJobResult:
    output: Path
    losses: list[float]
    test: dict[str, float] = field(default_factory=dict)  # model label -> accuracy
    validation: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)
    best_steps: list[int] = field(default_factory=list)  # the step each merge kept
    notes: list[str] = field(default_factory=list)  # what the user should know


def _check_models(paths: list[str]) -> list[str]:
    """Full checkpoints (np-merge trains whole modules), each readable; returns the paths."""
    for p in paths:
        if is_adapter(p) or split_reference(p) is not None:
            raise ModelError(f"model {p!r} is a LoRA adapter; np-merge trains full models: "
                             "write it out first (evomerge merge with merge_method: linear "
                             "and the adapter alone)")
        Checkpoint(p)  # raises a one-line ModelError for a missing or broken model
    return paths


def _check_shapes(paths: list[str], sources: dict[str, Any]) -> None:
    shapes = [{n: tuple(sources[p].shape(n)) for n in sources[p].names()} for p in paths]
    for p, s in zip(paths[1:], shapes[1:], strict=True):
        if s.keys() != shapes[0].keys():
            name = sorted(s.keys() ^ shapes[0].keys())[0]
            raise ModelError(f"{p} and {paths[0]} differ in their tensors ({name})")
        bad = next((n for n in s if s[n] != shapes[0][n]), None)
        if bad is not None:
            hint = ("; the vocabularies differ: set tokenizer_source: union (or base)"
                    if s[bad][1:] == shapes[0][bad][1:] and "embed" in bad else "")
            raise ModelError(f"{bad}: shape {s[bad]} in {p}, {shapes[0][bad]} in {paths[0]}"
                             f"{hint}")


def _batches(tok: Any, task: Task, size: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    rng = random.Random(seed)
    while True:  # reshuffled epochs
        items = list(task.items)
        rng.shuffle(items)
        yield from task_batches(tok, task, items, size)


def np_merge(config: NPMergeConfig, *, force: bool = False, progress: Progress | None = None,
             log: Callable[[str], None] = lambda s: None) -> NPMergeJobResult:
    """Run the NP Merge job of ``config``; returns the output path, the loss per step and
    the test accuracies."""
    out = Path(config.output).resolve()
    inputs = [*config.models, *([config.base_model] if config.base_model else [])]
    prepare_output(out, force, inputs)
    dev = resolve_device(config.device)
    train_task = load_data(config.data, "data")
    sources, vocab = aligned_inputs(config.tokenizer_source, inputs,
                                    config.base_model or config.models[0],
                                    {m: open_model(m) for m in _check_models(inputs)})
    _check_shapes(inputs, sources)
    tok = vocab.tokenizer if vocab else load_tokenizer(config.models[0])
    plan = npmerge_plan(sources, device=config.device, has_base=config.base_model is not None,
                        granularity=config.granularity, batch_size=config.batch_size,
                        seq_len=longest_sequence([train_task], tok))
    log(f"memory plan: {plan.describe()}")
    if config.memory_check:
        check_fits(plan, {}, {"device": available(config.device), "host": available("cpu")})
    if train_task.kind != "generate":
        raise ConfigError("data: NP Merge learns from answer texts; multiple-choice tasks are "
                          "not supported")
    test_task = load_data(config.test, "test") if config.test is not None else None
    train_task, val_task = _validation_split(config, train_task)
    torch.manual_seed(config.seed)

    def load(path: str) -> torch.nn.Module:
        return (load_aligned_model(path, sources[path], vocab) if vocab
                else load_causal_lm(path))

    models = [load(m) for m in config.models]
    states = [m.state_dict() for m in models]
    base = load(config.base_model).state_dict() if config.base_model else None
    for path, state in zip(inputs, [*states, *([base] if base else [])], strict=True):
        for name, tensor in state.items():
            require_finite(tensor, name, path)
    # the output's place is made (and checked writable, with room) before training
    ensure_space(out.parent, sum(t.numel() * t.element_size() for t in states[0].values()),
                 f"the merged model {out.name}")
    with output_dir(out, "model", inputs) as tmp:
        # the first model is also the module the merge runs through and is written from:
        # its weights are replaced only once the merge is computed
        model = models[0]
        what = "AdaMerging" if config.mode == "adamerging" else "NP Merge"
        log(f"{what} of {len(config.models)} models on {len(train_task.items)} items, "
            f"{config.steps} steps" + (f", checked on {len(val_task.items)} held-out items"
                                       if val_task is not None else ""))
        # AdaMerging learns from the inputs alone (its answers only locate where they
        # start); the other modes from the answers' likelihood
        loss = lm_entropy_loss if config.mode == "adamerging" else lm_loss
        validate = None
        if val_task is not None:
            batches = list(task_batches(tok, val_task, list(val_task.items), config.batch_size))

            def validate(forward: Any) -> float:
                total = sum(float(loss(forward, {k: v.to(dev) for k, v in b.items()}))
                            * len(b["input_ids"]) for b in batches)
                return total / len(val_task.items)

        result = np_merge_modules(model, states, _batches(tok, train_task, config.batch_size,
                                                          config.seed),
                                  loss, steps=config.steps, lr=config.lr,
                                  granularity=config.granularity, mode=config.mode,
                                  init=config.init,
                                  device=dev, base=base, progress=progress,
                                  validate=validate, eval_every=config.eval_every,
                                  patience=config.patience)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in result.state_dict.items():
                target = params[name] if name in params else model.get_buffer(name)
                target.copy_(value)
        try:
            _save(tmp, model, tok, config, result)
        except OSError as exc:
            raise write_error(out, exc) from None
    job = NPMergeJobResult(out, result.losses, validation=result.validation,
                           best_steps=result.best_steps, notes=_notes(config, result))
    if test_task is not None:
        job.test = _test(config, test_task, tok, model, dev, load, job.notes)
    return job


def _validation_split(config: NPMergeConfig, task: Task) -> tuple[Task, Task | None]:
    """(training items, held-out items): the validation data given, or a seeded fraction of
    the data that training never sees."""
    if config.validation is not None:
        val = load_data(config.validation, "validation")
        same = ("zoo", "split", "file", "lm_eval")
        if all(getattr(config.validation, k) == getattr(config.data, k) for k in same):
            held = set(val.ids)  # the same items: never trained on
            task = task.subset([i for i in task.ids if i not in held])
            if not task.items:
                raise ConfigError("data: every item is also a validation item")
        return task, val
    n = int(round(config.validation_fraction * len(task.items)))
    if n == 0:
        return task, None
    if n >= len(task.items):
        raise ConfigError(f"data: {len(task.items)} items leave none to train on after "
                          f"validation_fraction {config.validation_fraction}")
    order = [it.id for it in task.items]
    random.Random(config.seed).shuffle(order)
    held = set(order[:n])
    return (task.subset([i for i in task.ids if i not in held]),
            task.subset([i for i in task.ids if i in held]))


def _notes(config: NPMergeConfig, result: Any) -> list[str]:
    """A plain warning when the kept merge is worse on validation than an input model."""
    best, inputs = result.best_validation, result.input_validation
    if best is None or not inputs:
        return []
    k = min(range(len(config.models)), key=lambda i: inputs[i])
    if best <= inputs[k]:
        return []
    return [f"the merge's validation loss {best:.4f} is worse than {Path(config.models[k]).name}"
            f"'s own {inputs[k]:.4f}: the input model may serve better (more data, "
            "granularity row or tensor, or fewer steps may help)"]


def _save(tmp: Path, model: torch.nn.Module, tok: Any, config: NPMergeConfig,
          result: Any) -> None:
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "np_merge.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"),
                                                      sort_keys=False))
    summary = {n: {"mean": float(c.float().mean()), "std": float(c.float().std())
                   if c.numel() > 1 else 0.0}
               for n, c in result.coefficients[-1].items()}
    (tmp / "np_merge_coefficients.json").write_text(json.dumps(
        {"losses": result.losses, "validation": result.validation,
         "best_steps": result.best_steps, "input_validation": result.input_validation,
         "last_merge_coefficients": summary}, indent=1))


def _test(config: NPMergeConfig, task: Task, tok: Any, merged: torch.nn.Module,
          dev: torch.device, load: Callable[[str], torch.nn.Module], notes: list[str]
          ) -> dict[str, float]:
    """Test accuracy of every input and of the merge; a merge below its best input is said
    in ``notes`` with the paired comparison, so a worse model is never written silently."""
    from evomerge.eval.evaluator import Evaluator
    from evomerge.stats import paired

    scores, answers = {}, {}
    for i, path in enumerate(config.models):
        endpoint = load(path).to(dev)
        label = Path(path).name if Path(path).name not in scores else f"{Path(path).name}#{i}"
        res = Evaluator(endpoint, tok, batch_size=64)(task)
        scores[label], answers[label] = res.accuracy, res.as_dict()
        del endpoint
    res = Evaluator(merged.to(dev), tok, batch_size=64)(task)
    scores["np-merge"] = res.accuracy
    best = max(answers, key=lambda k: scores[k])
    if res.accuracy < scores[best]:
        cmp = paired({"t": res.as_dict()}, {"t": answers[best]}, best)
        notes.append(f"the merge scores {100 * res.accuracy:.1f} % on the test items, below "
                     f"input {best} ({100 * scores[best]:.1f} %); "
                     + cmp.sentence("test", "the merge")
                     + "; the input model may serve better")
    return scores
