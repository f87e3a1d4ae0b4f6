"""The memory a search will need, computed from the checkpoint headers before anything is
loaded, and the check that it fits.

A search (run/worker.py) holds, for its whole life:

- the inputs: the base and every model, converted to the search ``dtype`` once, on the
  compute device (on the host with ``offload: true``);
- the live model every candidate is merged into, on the compute device;
- the task vectors (model - base) of the methods that reuse them (task arithmetic), beside
  the inputs;
- the evaluation batch: logits (batch x sequence x vocabulary, float32) and the KV cache;
- the merge's working tensors, for the largest tensor: one float32 buffer for task
  arithmetic, 2 per model + 2 for the other methods (TIES measured 5.7 buffers for two
  models: float32 inputs, stacked deltas, masks, signs);
- on the host, the Python runtime with torch and transformers (``RUNTIME_BYTES``, measured).

While the inputs are read, one checkpoint's pages are mapped on the host besides (all of
them when vocabularies are aligned: every model's rows are needed at once). The plan is the
larger of that moment and the steady state. ``docs/benchmarks.md`` compares it with the
measured peak of real searches.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from evomerge.errors import ConfigError
from evomerge.io.checkpoint import TensorSource

GB = 1024**3
# RSS of the Python process with torch, transformers and evomerge imported and one forward
# pass done (measured on CPU, benchmarks/memory_plan.py); the host side of every plan
RUNTIME_BYTES = int(0.45 * GB)
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class MemoryPlan:
    """Bytes per place ("device", "host") and what they are for."""

    device: str
    parts: dict[str, dict[str, int]] = field(default_factory=dict)  # place -> part -> bytes

    def total(self, place: str) -> int:
        return sum(self.parts.get(place, {}).values())

    def describe(self) -> str:
        lines = []
        for place, parts in self.parts.items():
            where = self.device if place == "device" else "host"
            detail = ", ".join(f"{k} {size(v)}" for k, v in parts.items() if v)
            lines.append(f"{where} {size(self.total(place))} ({detail})")
        return "; ".join(lines)


def size(n: int) -> str:
    return f"{n / GB:.2f} GB" if n >= GB // 10 else f"{n / 1024**2:.1f} MB"


def search_plan(sources: Mapping[str, TensorSource], *, device: str, dtype: str,
                offload: bool, reuses_task_vectors: bool, batch_size: int, seq_len: int,
                aligned: bool = False, stacks_models: bool = False) -> MemoryPlan:
    """The plan of a search over ``sources`` (base first); see the module docstring."""
    b = _DTYPE_BYTES[dtype]
    first = next(iter(sources.values()))
    params, vocab, layers, hidden, kv = _shape_facts(first)
    files = [sum(_numel(s.shape(n)) * _itemsize(s.dtype(n)) for n in s.names())
             for s in sources.values()]
    n_models = len(sources) - 1
    largest = max(_numel(first.shape(n)) for n in first.names())
    working = largest * 4 * (1 if reuses_task_vectors else 2 * n_models + 2)
    inputs = (1 + n_models) * params * b
    task_vectors = n_models * params * b if reuses_task_vectors else 0
    evaluation = batch_size * seq_len * (vocab * 4 + 2 * layers * kv * b)
    on_device = {"live model": params * b, "evaluation": evaluation, "merging": working,
                 # the dis space: every input as a module plus the shell it stacks into
                 "stacked models": (2 + n_models) * params * b if stacks_models else 0}
    beside = {"inputs": inputs, "task vectors": task_vectors}
    reading = sum(files) if aligned else max(files)
    host: dict[str, int] = {"runtime": RUNTIME_BYTES}
    plan = MemoryPlan(device)
    if device.startswith("cpu"):
        steady = {**host, **on_device, **beside}
        loading = {**host, "inputs": inputs, "reading checkpoints": reading}
        plan.parts["host"] = steady if sum(steady.values()) >= sum(loading.values()) \
            else loading
        return plan
    if offload:
        plan.parts["device"] = on_device
        plan.parts["host"] = {**host, **beside}
    else:
        plan.parts["device"] = {**on_device, **beside}
        plan.parts["host"] = {**host, "reading checkpoints": reading}
    return plan


def npmerge_plan(sources: Mapping[str, TensorSource], *, device: str, has_base: bool,
                 granularity: str, batch_size: int, seq_len: int) -> MemoryPlan:
    """np-merge: every model (and the base) as a float32 module; the coefficients with their
    gradients, Adam's two moments and the kept best copy (one per parameter, row or tensor);
    the merged weights with what autograd keeps per weight; the batch's activations (logits
    for the loss and its gradient, and per layer a dozen hidden-size tensors). Per merged
    weight autograd keeps three tensors (sigmoid of the coefficient, the difference, the
    result) and the backward pass adds two gradients of the same size."""
    first = next(iter(sources.values()))
    names = [n for n in first.names() if first.dtype(n).is_floating_point]
    params, vocab, layers, hidden, _ = _shape_facts(first)
    coefficients = {"parameter": params, "row": sum(int(first.shape(n)[0]) if first.shape(n)
                                                    else 1 for n in names),
                    "tensor": len(names), "model": 1}[granularity]
    n_models = len(sources) - (1 if has_base else 0)
    models = (n_models + int(has_base)) * params * 4
    # the coefficients, their gradient, Adam's two moments and the best step's copy
    training = {"coefficients": 5 * coefficients * 4, "merged weights": 5 * params * 4,
                "activations": batch_size * seq_len * (3 * vocab + 12 * layers * hidden) * 4}
    plan = MemoryPlan(device)
    if device.startswith("cpu"):
        plan.parts["host"] = {"runtime": RUNTIME_BYTES, "models": models, **training}
    else:  # the modules stay on the host; their float32 copies and the training on the device
        plan.parts["device"] = {"models": models, **training}
        plan.parts["host"] = {"runtime": RUNTIME_BYTES, "models": models}
    return plan


def longest_sequence(tasks: list[Any], tokenizer: Any, sample: int = 64) -> int:
    """Prompt plus answer tokens of the longest of up to ``sample`` items per task, as the
    evaluator renders them (few-shot examples and chat template included)."""
    from evomerge.eval.prompts import render

    longest = 1
    for task in tasks:
        if not task.items:
            continue
        step = max(1, len(task.items) // sample)
        for item in task.items[::step][:sample]:
            try:
                text, special = render(task, item, tokenizer)
                n = len(tokenizer(text, add_special_tokens=special).input_ids)
            except Exception:  # noqa: BLE001 - an estimate; the evaluator reports real errors
                n = len(item.prompt) // 2
            if task.kind == "multiple_choice":
                n += max((len(tokenizer(c, add_special_tokens=False).input_ids)
                          for c in item.choices or ("",)), default=0)
            else:
                n += task.max_new_tokens
            longest = max(longest, n)
    return longest


def available(device: str) -> int | None:
    """Free bytes on a device (host: MemAvailable); None when it cannot be told."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    if dev.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def auto_batch_size(at_one: MemoryPlan, free: int | None, cap: int = 256,
                    headroom: float = 0.9) -> int:
    """The largest evaluation batch (at most ``cap``) whose plan fits ``headroom`` of the
    ``free`` bytes where evaluation runs, from the plan at batch size 1; 64 when the free
    memory cannot be told."""
    place = "host" if at_one.device.startswith("cpu") else "device"
    per_item = at_one.parts[place]["evaluation"]
    if free is None or per_item <= 0:
        return min(cap, 64)
    rest = at_one.total(place) - per_item
    return max(1, min(cap, int((free * headroom - rest) // per_item)))


def check_fits(plan: MemoryPlan, alternatives: Mapping[str, MemoryPlan],
               free: Mapping[str, int | None]) -> None:
    """A one-line error when a place's plan exceeds what it has free, naming the settings
    (from ``alternatives``) whose plans would fit."""
    for place, total in ((p, plan.total(p)) for p in plan.parts):
        have = free.get(place)
        if have is None or total <= have:
            continue
        fits = [name for name, alt in alternatives.items()
                if all(free.get(p) is None or alt.total(p) <= (free.get(p) or 0)
                       for p in alt.parts)]
        where = plan.device if place == "device" else "the host"
        way = (f"; it would fit with {' or '.join(fits)}" if fits else
               "; fewer models, a smaller batch_size or a larger device would")
        raise ConfigError(f"this search needs {total / GB:.1f} GB on {where}, which has "
                          f"{have / GB:.1f} GB free{way} (memory_check: false to try anyway)")


def _shape_facts(source: TensorSource) -> tuple[int, int, int, int, int]:
    """(floating-point parameters, vocabulary rows, layers, hidden size, KV width per token
    and layer) of a model, from its headers and config."""
    from evomerge.io.naming import num_layers_of
    from evomerge.merge.vocab import vocab_rows

    params = sum(_numel(source.shape(n)) for n in source.names()
                 if source.dtype(n).is_floating_point)
    cfg = source.config or {}
    text = cfg.get("text_config") or cfg
    hidden = int(text.get("hidden_size") or text.get("n_embd") or 0)
    heads = int(text.get("num_attention_heads") or 1)
    kv = int(text.get("num_key_value_heads") or heads) * int(
        text.get("head_dim") or (hidden // heads if heads else 0))
    return (params, vocab_rows(source) or 0, num_layers_of(cfg, source.names()), hidden, kv)


def _numel(shape: Any) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()
