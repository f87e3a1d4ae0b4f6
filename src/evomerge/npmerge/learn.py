"""NP Merge: learn one merging coefficient per parameter by gradient descent on a task loss.

W = alpha * W_A + (1 - alpha) * W_B with alpha = sigmoid(p), p initialised to 0 (the plain
average) and trained with Adam on a small dataset. The merged weights are never materialised
as a model of their own: each step calls the network through ``torch.func.functional_call``
with the merged tensors, so gradients flow to the coefficients only. More than two models:
successive pairwise merges (as in the paper), or one joint softmax over the K models per
parameter (``mode="softmax"``).

``mode="task_vectors"`` (an extension beyond the paper, for fine-tunes of one base):
W = W_base + sum_k lambda_k * (W_k - W_base) with one unconstrained lambda per parameter and
model, starting at 1 (task arithmetic), so the merge can leave the segment between the
endpoints, as task arithmetic does.

``mode="adamerging"`` (AdaMerging, Yang et al., ICLR 2024): the same form, the scales
starting at ``init`` (0.3 in the paper) and learned without labels, by minimising the
entropy of the merged model's predictions on unlabeled inputs (``entropy_loss``,
``lm_entropy_loss``); ``granularity="model"`` is task-wise AdaMerging (one scale per model),
``"tensor"`` layer-wise (one per model and parameter tensor, as the paper's code).

Memory per step, beyond the K endpoints: the coefficients, their gradient and Adam's two
moments (4 x the model size at ``granularity="parameter"``; per output row or per tensor
they are negligible), plus the merged weights and their gradient (2 x the model size) and the
activations of one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch.func import functional_call

from evomerge.errors import ConfigError, ModelError

Granularity = Literal["parameter", "row", "tensor", "model"]
Mode = Literal["pairwise", "softmax", "task_vectors", "adamerging"]
Forward = Callable[..., Any]
LossFn = Callable[[Forward, Any], torch.Tensor]
Progress = Callable[[int, int, float], None]  # step, total steps, loss


def classification_loss(forward: Forward, batch: tuple[torch.Tensor, torch.Tensor]
                        ) -> torch.Tensor:
    """Cross-entropy of ``forward(x)`` against labels ``y`` for a batch ``(x, y)``."""
    x, y = batch
    return torch.nn.functional.cross_entropy(forward(x), y)


def lm_loss(forward: Forward, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A causal LM's own loss on ``batch`` (input_ids, attention_mask, labels)."""
    return forward(**batch).loss


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy of the softmax of ``logits`` over the last axis."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1).mean()


def entropy_loss(forward: Forward, batch: Any) -> torch.Tensor:
    """AdaMerging's objective for a classifier: the entropy of ``forward(x)``; labels in a
    ``(x, y)`` batch are ignored."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    return entropy(forward(x))


def lm_entropy_loss(forward: Forward, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """AdaMerging's objective for a causal LM: the entropy of the next-token distribution
    where the answer starts (the last prompt token), which no answer token influences: the
    answers in ``labels`` only locate that position."""
    labels = batch["labels"]
    first = (labels != -100).int().argmax(dim=1)  # the first answer token
    logits = forward(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                     ).logits
    rows = torch.arange(len(first), device=logits.device)
    return entropy(logits[rows, (first - 1).clamp(min=0)])


def coefficient_shape(shape: torch.Size, granularity: Granularity) -> tuple[int, ...]:
    if granularity == "model":
        return ()
    if granularity == "parameter" or len(shape) == 0:
        return tuple(shape)
    if granularity == "row":
        return (shape[0],) + (1,) * (len(shape) - 1)
    if granularity == "tensor":
        return (1,) * len(shape)
    raise ConfigError(f"unknown granularity {granularity!r} (parameter, row, tensor, model)")


@dataclass
class NPMergeResult:
    state_dict: dict[str, torch.Tensor]
    # pairwise: one alpha tensor per parameter and merge step (weight of the running merge);
    # softmax: the K weights per parameter, stacked on a leading axis; task_vectors: the K
    # scales of the task vectors, stacked the same way
    coefficients: list[dict[str, torch.Tensor]]
    losses: list[float] = field(default_factory=list)
    # with a validation set: (step, validation loss) per check, the step each merge kept
    # (0: the untrained start), and each input model's own validation loss
    validation: list[tuple[int, float]] = field(default_factory=list)
    best_steps: list[int] = field(default_factory=list)
    input_validation: list[float] = field(default_factory=list)

    @property
    def best_validation(self) -> float | None:
        """The validation loss of the kept merge (the last merge step's best)."""
        if not self.best_steps or not self.validation:
            return None
        return min(v for _, v in self.validation[self._last_start():])

    def _last_start(self) -> int:
        starts = [i for i, (step, _) in enumerate(self.validation) if step == 0]
        return starts[-1] if starts else 0


def _stream(batches: Iterable[Any]) -> Iterator[Any]:
    """Batches without end: a re-iterable (list, DataLoader) is iterated again and again; an
    iterator is used as it comes and must last for all the steps."""
    if isinstance(batches, Iterator):
        yield from batches
        raise ConfigError("the data iterator ran out before the last step (pass a list or "
                          "a DataLoader, or an endless iterator)")
    while True:
        empty = True
        for b in batches:
            empty = False
            yield b
        if empty:
            raise ConfigError("no training batches")


def np_merge_modules(module: torch.nn.Module, states: Sequence[Mapping[str, torch.Tensor]],
                     batches: Iterable[Any], loss_fn: LossFn = classification_loss, *,
                     steps: int = 100, lr: float = 0.05, granularity: Granularity = "parameter",
                     mode: Mode = "pairwise", device: str | torch.device | None = None,
                     base: Mapping[str, torch.Tensor] | None = None,
                     progress: Progress | None = None,
                     validate: Callable[[Forward], float] | None = None,
                     eval_every: int = 10, patience: int | None = None,
                     init: float | None = None) -> NPMergeResult:
    """Merge the state dicts ``states`` (same architecture as ``module``, aligned first when
    trained from different initialisations) with coefficients learned on ``batches``.

    ``loss_fn(forward, batch)`` returns the loss of one batch, where ``forward`` calls
    ``module`` with the merged weights. Floating-point buffers (BatchNorm statistics) are
    averaged, others taken from the first model. ``steps`` counts optimiser steps per pairwise
    merge (K - 1 of them) or in all for softmax.

    ``validate(forward)`` gives a held-out loss: it is checked before training and every
    ``eval_every`` steps, training stops after ``patience`` checks without a lower one, and
    the coefficients of the lowest are kept (a merge that only overfits its few training
    items keeps its start). ``init``: the task-vector scales' start (task_vectors: 1,
    adamerging: 0.3)."""
    if granularity == "model" and mode not in ("task_vectors", "adamerging"):
        raise ConfigError("granularity model (one coefficient per model) needs mode "
                          "task_vectors or adamerging")
    if mode in ("task_vectors", "adamerging"):
        if base is None:
            raise ConfigError(f"mode {mode} needs the base model's weights")
    elif len(states) < 2:
        raise ConfigError("NP Merge needs at least two models")
    if steps < 1 or lr <= 0:
        raise ConfigError("steps must be >= 1 and lr > 0")
    dev = torch.device(device) if device is not None else next(module.parameters()).device
    names = [n for n, p in module.named_parameters() if p.is_floating_point()]
    for i, s in enumerate(states):
        for n in names:
            if n not in s:
                raise ModelError(f"model {i} has no parameter {n}")
            if s[n].shape != states[0][n].shape:
                raise ModelError(f"parameter {n}: shape {tuple(s[n].shape)} in model {i}, "
                                 f"{tuple(states[0][n].shape)} in model 0")
    module = module.to(dev)
    module.eval()
    tensors = [{n: s[n].detach().to(dev, torch.float32) for n in names} for s in states]
    if base is not None:
        missing = [n for n in names if n not in base]
        if missing:
            raise ModelError(f"the base has no parameter {missing[0]}")
    buffers = {}
    for n, b in module.named_buffers():
        vals = [s[n] for s in states if n in s]
        if vals and b.is_floating_point():
            buffers[n] = torch.stack([v.to(dev, b.dtype) for v in vals]).mean(0)
        elif vals:
            buffers[n] = vals[0].to(dev)
    stream = _stream(batches)
    losses: list[float] = []
    coefficients: list[dict[str, torch.Tensor]] = []
    total = steps * (len(states) - 1 if mode == "pairwise" else 1)
    validation: list[tuple[int, float]] = []
    best_steps: list[int] = []

    def held_out(params: dict[str, torch.Tensor]) -> float:
        assert validate is not None
        with torch.no_grad():
            return float(validate(lambda *a, **k: functional_call(
                module, {**params, **buffers}, a, k)))

    inputs_val = [held_out(t) for t in tensors] if validate is not None else []

    def train(logits: dict[str, torch.Tensor],
              combine: Callable[[str, torch.Tensor], torch.Tensor]) -> None:
        unique = list({id(p): p for p in logits.values()}.values())  # shared (model) once
        opt = torch.optim.Adam(unique, lr=lr)

        def check(step: int) -> float:
            with torch.no_grad():
                v = held_out({n: combine(n, logits[n]) for n in names})
            validation.append((step, v))
            return v

        best = (check(0), 0, {n: p.detach().clone() for n, p in logits.items()}) \
            if validate is not None else None
        stale = 0
        for step in range(1, steps + 1):
            params = {n: combine(n, logits[n]) for n in names}

            def forward(*args: Any, params: dict = params, **kwargs: Any) -> Any:
                return functional_call(module, {**params, **buffers}, args, kwargs)

            loss = loss_fn(forward, _to(next(stream), dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if progress is not None:
                progress(len(losses), total, losses[-1])
            if best is not None and (step % eval_every == 0 or step == steps):
                v = check(step)
                if v < best[0] - 1e-9:
                    best, stale = (v, step, {n: p.detach().clone() for n, p in
                                             logits.items()}), 0
                else:
                    stale += 1
                if patience is not None and stale >= patience:
                    break
        if best is not None:  # the coefficients of the lowest validation loss
            with torch.no_grad():
                for n, p in logits.items():
                    p.copy_(best[2][n])
            best_steps.append(best[1])

    if mode == "pairwise":
        merged = tensors[0]
        for other in tensors[1:]:
            logits = {n: torch.zeros(coefficient_shape(merged[n].shape, granularity),
                                     device=dev, requires_grad=True) for n in names}

            def pair(n: str, p: torch.Tensor, a: dict = merged, b: dict = other
                     ) -> torch.Tensor:
                return b[n] + torch.sigmoid(p) * (a[n] - b[n])

            train(logits, pair)
            with torch.no_grad():
                merged = {n: pair(n, logits[n]) for n in names}
            coefficients.append({n: torch.sigmoid(p).detach().cpu() for n, p in logits.items()})
    elif mode == "softmax":
        k = len(tensors)
        logits = {n: torch.zeros((k, *coefficient_shape(tensors[0][n].shape, granularity)),
                                 device=dev, requires_grad=True) for n in names}

        def joint(n: str, p: torch.Tensor) -> torch.Tensor:
            w = torch.softmax(p, dim=0)
            return sum(w[i] * tensors[i][n] for i in range(k))  # type: ignore[return-value]

        train(logits, joint)
        with torch.no_grad():
            merged = {n: joint(n, logits[n]) for n in names}
        coefficients.append({n: torch.softmax(p.detach(), 0).cpu() for n, p in logits.items()})
    elif mode in ("task_vectors", "adamerging"):
        assert base is not None
        k = len(tensors)
        start = init if init is not None else (1.0 if mode == "task_vectors" else 0.3)
        b = {n: base[n].detach().to(dev, torch.float32) for n in names}
        deltas = [{n: t[n] - b[n] for n in names} for t in tensors]
        if granularity == "model":  # one scale per model, shared by every tensor
            shared = torch.full((k,), start, device=dev, requires_grad=True)
            logits = dict.fromkeys(names, shared)
        else:
            logits = {n: torch.full((k, *coefficient_shape(b[n].shape, granularity)), start,
                                    device=dev, requires_grad=True) for n in names}

        def scaled(n: str, p: torch.Tensor) -> torch.Tensor:
            return b[n] + sum(p[i] * deltas[i][n] for i in range(k))  # type: ignore[return-value]

        train(logits, scaled)
        with torch.no_grad():
            merged = {n: scaled(n, logits[n]) for n in names}
        coefficients.append({n: p.detach().cpu() for n, p in logits.items()})
    else:
        raise ConfigError(f"unknown mode {mode!r} (pairwise, softmax, task_vectors, "
                          "adamerging)")
    state = {n: merged[n].detach().to("cpu", states[0][n].dtype) for n in names}
    state.update({n: b.detach().cpu() for n, b in buffers.items()})
    return NPMergeResult(state, coefficients, losses, validation, best_steps, inputs_val)


def _to(batch: Any, dev: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(dev)
    if isinstance(batch, Mapping):
        return {k: _to(v, dev) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(v, dev) for v in batch)
    return batch
