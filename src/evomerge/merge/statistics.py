"""Statistics that data-dependent merges need, computed once per (model, data) and cached.

- ``gram``: for every ``nn.Linear`` the mean Gram matrix of its inputs, G = X^T X / n over
  the n non-padding tokens (RegMean). Stored under the layer's weight name.
- ``fisher``: the diagonal empirical Fisher information of every parameter, the mean over
  examples of the squared gradient of the answer's negative log-likelihood (Fisher merging).
- ``gram_pp``: RegMean++'s Gram matrices, each model's layer inputs computed through the
  already merged earlier layers (``sequential_grams``): computed for all models at once.

The data is a recipe's ``data:`` block (the same sources np-merge and evaluation use: a zoo
task, a task file, an lm-eval task; ``limit`` items). Each model's statistics are written as
``<kind>-<model>-<key>.safetensors`` in the cache directory, the key hashing the model's files,
the data block and the kind, so a second merge or every candidate of a search reuses them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from evomerge.errors import ConfigError, EvomergeError

if TYPE_CHECKING:
    from evomerge.recipe import MergeRecipe

Batch = Mapping[str, torch.Tensor]


def default_cache() -> Path:
    """``$EVOMERGE_CACHE/statistics``, else ``~/.cache/evomerge/statistics``."""
    root = os.environ.get("EVOMERGE_CACHE") or Path.home() / ".cache" / "evomerge"
    return Path(root) / "statistics"


def _call(module: torch.nn.Module, batch: Batch) -> Any:
    return module(**{k: v for k, v in batch.items() if k != "labels"})


@torch.no_grad()
def input_grams(module: torch.nn.Module, batches: Iterable[Batch],
                forward: Callable[[torch.nn.Module, Batch], Any] = _call
                ) -> dict[str, torch.Tensor]:
    """Mean input Gram matrix of every ``nn.Linear`` in ``module``, by weight name; tokens
    outside ``attention_mask`` are left out. Accumulated in float64. ``forward`` runs a
    batch (default: the batch's tensors as keyword arguments, labels left out)."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    mask: list[torch.Tensor | None] = [None]

    def hook(name: str) -> Callable[..., None]:
        def record(_: torch.nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0]
            m = mask[0]
            if m is not None and x.shape[:2] == m.shape:
                x = x[m.bool()]
            x = x.reshape(-1, x.shape[-1]).double()
            sums[name] = sums.get(name, 0) + x.T @ x  # type: ignore[assignment]
            counts[name] = counts.get(name, 0) + x.shape[0]
        return record

    handles = [mod.register_forward_pre_hook(hook(f"{name}.weight"))
               for name, mod in module.named_modules() if isinstance(mod, torch.nn.Linear)]
    try:
        for batch in batches:
            mask[0] = batch.get("attention_mask")
            forward(module, batch)
    finally:
        for h in handles:
            h.remove()
    return {k: (v / counts[k]).float() for k, v in sums.items()}


def regmean_solve(weights: list[torch.Tensor], grams: list[torch.Tensor], alpha: float
                  ) -> torch.Tensor:
    """RegMean's merged weight (sum_i W_i G_i') (sum_i G_i')^+, G' = alpha G + (1 - alpha)
    diag(G), in float64."""
    total = torch.zeros_like(grams[0], dtype=torch.float64)
    target = torch.zeros_like(weights[0], dtype=torch.float64)
    for w, g in zip(weights, grams, strict=True):
        g = alpha * g.double() + (1 - alpha) * torch.diag(torch.diagonal(g.double()))
        total += g
        target += w.double() @ g
    return (target @ torch.linalg.pinv(total, hermitian=True)).to(weights[0].dtype)


def sequential_grams(module: torch.nn.Module, states: list[Mapping[str, torch.Tensor]],
                     batches: list[list[Batch]], alpha: float,
                     forward: Callable[[torch.nn.Module, Batch], Any] = _call
                     ) -> list[dict[str, torch.Tensor]]:
    """RegMean++'s Gram matrices: each model's inputs to a layer's linear maps are computed
    through the already merged earlier layers (RegMean merges layer by layer, in forward
    order), and through the model's own weights from that layer on. Layers are the groups of
    ``nn.Linear`` sharing a transformer layer index (q, k, v, o and the MLP of one block), or
    each linear alone elsewhere. Everything that is not a linear weight is averaged, as
    RegMean does; returns per model the Gram matrices by weight name."""
    from evomerge.io.naming import layer_index

    leaves = [(n, m) for n, m in module.named_modules() if not list(m.children())]
    order: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda _m, _a, n=n: order.append(n))
             for n, m in leaves]
    try:
        with torch.no_grad():
            forward(module, batches[0][0])
    finally:
        for h in hooks:
            h.remove()
    first_use = {}
    for n in order:
        first_use.setdefault(n, len(first_use))
    linear = [n for n, m in leaves if isinstance(m, torch.nn.Linear) and n in first_use]
    groups: dict[str, list[str]] = {}
    for n in sorted(linear, key=first_use.__getitem__):
        idx = layer_index(f"{n}.weight")
        groups.setdefault(n if idx is None else f"layer {idx}", []).append(n)
    names = [n for n, _ in module.named_parameters()]
    owner = {n: n.rsplit(".", 1)[0] if "." in n else "" for n in names}
    merged = {n: torch.stack([s[n].float() for s in states]).mean(0) for n in names}
    out: list[dict[str, torch.Tensor]] = [{} for _ in states]
    for members in groups.values():
        start = min(first_use[n] for n in members)
        for i, state in enumerate(states):
            params = {n: merged[n] if first_use.get(owner[n], -1) < start else state[n].float()
                      for n in names}
            grams = input_grams(_Functional(module, params), batches[i], forward)
            for n in members:
                out[i][f"{n}.weight"] = grams[f"{n}.weight"]
        for n in members:
            key = f"{n}.weight"
            merged[key] = regmean_solve([s[key].float() for s in states],
                                        [g[key] for g in out], alpha)
    return out


class _Functional(torch.nn.Module):
    """``module`` called with other parameter values (``torch.func.functional_call``),
    keeping its submodules (and their hooks) and names."""

    def __init__(self, module: torch.nn.Module, params: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.inner = module
        self.params = params

    def named_modules(self, *args: Any, **kwargs: Any) -> Any:  # the inner module's names
        return self.inner.named_modules(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        from torch.func import functional_call

        return functional_call(self.inner, self.params, args, kwargs)


def diagonal_fisher(module: torch.nn.Module, batches: Iterable[Batch],
                    loss: Callable[[torch.nn.Module, Batch], torch.Tensor]
                    ) -> dict[str, torch.Tensor]:
    """Mean over examples of each parameter's squared gradient of ``loss`` (one example per
    backward pass: the Fisher needs per-example gradients), by parameter name."""
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    n = 0
    with torch.enable_grad():  # also inside a caller's no_grad (a search's live merge)
        for batch in batches:
            rows = next(iter(batch.values())).shape[0]
            for i in range(rows):
                one = {k: v[i:i + 1] for k, v in batch.items()}
                module.zero_grad(set_to_none=True)
                loss(module, one).backward()
                for name, p in params.items():
                    if p.grad is not None:
                        sums[name] += p.grad.float().square()
                n += 1
    module.zero_grad(set_to_none=True)
    if n == 0:
        raise ConfigError("data: no examples to compute the Fisher information from")
    return {k: v / n for k, v in sums.items()}


def answer_nll(module: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Summed negative log-likelihood of the answer tokens (labels != -100)."""
    logits = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
        ignore_index=-100, reduction="sum")


class Statistics:
    """Statistics files by (kind, model), read lazily tensor by tensor."""

    def __init__(self, files: Mapping[tuple[str, str], Path]) -> None:
        self.files = dict(files)
        self._open: dict[tuple[str, str], Any] = {}

    def __getstate__(self) -> dict[str, Any]:  # file handles stay behind (Ray workers)
        return {"files": self.files, "_open": {}}

    def get(self, kind: str, model: str, tensor: str) -> torch.Tensor | None:
        """``kind`` statistic of ``tensor`` in ``model``; None where there is none (a tensor
        that is not a linear layer's weight, or that no gradient reached)."""
        from safetensors import safe_open

        key = (kind, model)
        if key not in self.files:
            return None
        if key not in self._open:
            f = safe_open(str(self.files[key]), framework="pt")
            self._open[key] = (f, set(f.keys()))
        f, names = self._open[key]
        return f.get_tensor(tensor) if tensor in names else None


def needed(recipe: MergeRecipe) -> dict[str, set[str]]:
    """kind -> the models whose statistics the recipe's data-dependent methods need."""
    from evomerge.merge.registry import get_method

    out: dict[str, set[str]] = {}
    groups = ([(recipe.merge_method, [m.model for m in recipe.models])] if recipe.models
              else [(s.merge_method or recipe.merge_method, [x.model for x in s.sources])
                    for s in recipe.slices or []])
    for method, models in groups:
        kind = get_method(method).statistics
        if kind is not None:
            out.setdefault(kind, set()).update(m for m in models if m != recipe.base_model
                                               or get_method(method).base == "input")
    return out


def data_of(recipe: MergeRecipe, model: str) -> dict[str, Any] | None:
    """A model's own ``data:`` block, else the recipe's."""
    own = next((m.data for m in recipe.models or [] if m.model == model and m.data), None)
    return own or recipe.data


def for_recipe(recipe: MergeRecipe, cache: Path | None = None,
               device: str | torch.device = "cpu",
               log: Callable[[str], None] | None = None) -> Statistics | None:
    """The statistics ``recipe`` needs (computed where the cache lacks them), or None."""
    files = {}
    cache = cache or default_cache()
    wanted = needed(recipe)
    for kind, models in wanted.items():  # every data block checked before any work
        for model in models:
            _validated(data_of(recipe, model), model, kind)
    for kind, models in wanted.items():
        if kind == "gram_pp":  # one joint computation over the models
            files.update(prepare_joint(sorted(models), {m: data_of(recipe, m) for m in models},
                                       _alpha(recipe), cache, device, log))
            continue
        for model in sorted(models):
            files[(kind, model)] = prepare(kind, model, data_of(recipe, model), cache, device,
                                           log)
    return Statistics(files) if files else None


def _alpha(recipe: MergeRecipe) -> float:
    """RegMean++'s alpha: one number for the whole merge (its earlier layers are merged
    while the statistics are computed)."""
    value = (recipe.parameters or {}).get("alpha", 0.9)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError("regmean_plusplus takes one alpha for the whole merge (a number), "
                          "not a list or per-layer values")
    return float(value)


def cache_key(kind: str, model: str, data: dict[str, Any]) -> str:
    from evomerge.io.fingerprint import file_fingerprint
    from evomerge.io.lora import input_dirs

    h = hashlib.sha256(json.dumps({"kind": kind, "data": data, "version": 1},
                                  sort_keys=True).encode())
    for d in input_dirs(model):
        for f in sorted(Path(d).iterdir()):
            if f.is_file() and not f.name.startswith("."):
                h.update(f"{f.name}:{file_fingerprint(f)}".encode())
    return h.hexdigest()[:20]


def compute(kind: str, model: str, data: dict[str, Any], batch_size: int = 8,
            device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """``kind`` statistics of ``model`` on the items of the ``data`` block."""
    from evomerge.io.hf import load_causal_lm

    net = load_causal_lm(model).to(device).eval().requires_grad_(kind == "fisher")
    batches = _batches(model, data, batch_size, device)
    if kind == "gram":
        return input_grams(net, batches)
    return diagonal_fisher(net, batches, answer_nll)


def _validated(data: dict[str, Any] | None, model: str, kind: str) -> dict[str, Any]:
    from pydantic import ValidationError

    from evomerge.config import DataConfig, key_suggestion
    from evomerge.recipe import format_validation_error

    if data is None:
        raise ConfigError(f"{model}: this recipe's method needs {kind} statistics: give the "
                          "recipe (or the model) a data: block, e.g. data: {zoo: add_en, "
                          "limit: 64} (file or lm_eval as in np-merge's data)")
    try:
        DataConfig.model_validate(data)
    except ValidationError as exc:  # as a config's errors: the key and the closest name
        raise ConfigError(f"{model}: data: {format_validation_error(exc)}"
                          f"{key_suggestion(DataConfig, exc, data)}") from None
    return data


def _save(stats: Mapping[str, torch.Tensor], path: Path, meta: dict[str, str]) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file({k: v.contiguous().cpu() for k, v in stats.items()}, str(tmp), metadata=meta)
        os.replace(tmp, path)
    except OSError as exc:
        raise _unwritable(path.parent, exc) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _cache_dir(cache: Path) -> Path:
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(cache, exc) from None
    return cache


def _file(cache: Path, kind: str, model: str, key: str) -> Path:
    """``<kind>-<model's name>-<key>.safetensors`` (a ``base+adapter`` named by its adapter)."""
    return cache / f"{kind}-{Path(model.split('+')[-1]).name or 'model'}-{key}.safetensors"


def _unwritable(where: Path, exc: OSError) -> EvomergeError:
    return EvomergeError(f"cannot write statistics to {where}: {exc.strerror or exc} (set "
                         "EVOMERGE_CACHE to a writable directory with room)")


def prepare_joint(models: list[str], data: dict[str, dict[str, Any] | None], alpha: float,
                  cache: Path, device: str | torch.device = "cpu",
                  log: Callable[[str], None] | None = None) -> dict[tuple[str, str], Path]:
    """RegMean++'s statistics of all ``models`` (one file each), computed together where the
    cache lacks any; the key covers every model, its data and alpha."""
    for m in models:
        _validated(data[m], m, "gram_pp")
    joint = hashlib.sha256(json.dumps({"alpha": alpha, "models": [
        cache_key("gram_pp", m, data[m] or {}) for m in models]}).encode()).hexdigest()[:20]
    _cache_dir(cache)
    paths = {("gram_pp", m): _file(cache, "gram_pp", m, joint) for m in models}
    if all(p.exists() for p in paths.values()):
        return paths
    if log is not None:
        log(f"computing RegMean++ statistics of {len(models)} models")
    for m, stats in zip(models, compute_joint(models, data, alpha, device=device),
                        strict=True):
        _save(stats, paths[("gram_pp", m)], {"model": m, "kind": "gram_pp",
                                              "alpha": str(alpha)})
    return paths


def compute_joint(models: list[str], data: dict[str, dict[str, Any] | None], alpha: float,
                  batch_size: int = 8, device: str | torch.device = "cpu"
                  ) -> list[dict[str, torch.Tensor]]:
    """``sequential_grams`` of causal LMs, each on its own ``data`` block's items."""
    from evomerge.io.hf import load_causal_lm

    nets = [load_causal_lm(m) for m in models]
    states = [{k: v.to(device) for k, v in net.state_dict().items()} for net in nets]
    module = nets[0].to(device).eval()
    batches = [list(_batches(m, data[m] or {}, batch_size, device)) for m in models]
    return sequential_grams(module, states, batches, alpha)


def _batches(model: str, data: dict[str, Any], batch_size: int, device: str | torch.device
             ) -> Iterable[Batch]:
    """The items of ``data`` as (prompt, answer) batches in ``model``'s tokenizer."""
    from evomerge.config import DataConfig
    from evomerge.eval.answer_batches import task_batches
    from evomerge.eval.sources.base import load_data
    from evomerge.io.hf import load_tokenizer
    from evomerge.io.lora import input_dirs

    task = load_data(DataConfig.model_validate(data), "data")
    tok = load_tokenizer(input_dirs(model)[0])
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    for batch in task_batches(tok, task, task.items, batch_size):
        yield {k: v.to(device) for k, v in batch.items()}


def prepare(kind: str, model: str, data: dict[str, Any] | None, cache: Path,
            device: str | torch.device = "cpu",
            log: Callable[[str], None] | None = None) -> Path:
    """The file of ``model``'s ``kind`` statistics on ``data``, computed if the cache lacks
    it (written atomically: a kill leaves no half file)."""
    data = _validated(data, model, kind)
    _cache_dir(cache)
    path = _file(cache, kind, model, cache_key(kind, model, data))
    if path.exists():
        return path
    if log is not None:
        log(f"computing {kind} statistics of {model} ({path.name})")
    _save(compute(kind, model, data, device=device), path,
          {"model": model, "kind": kind, "data": json.dumps(data)})
    return path
