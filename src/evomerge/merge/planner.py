"""Recipe -> per-tensor tasks -> merged tensors, on disk or in memory.

``MergePlan.build`` validates everything a merge needs before any arithmetic runs (methods,
model count, tensor presence and shapes, every parameter value for every tensor), so a user
mistake fails in a second with one line and nothing written. ``MergePlan.tensors`` then yields
merged tensors one at a time; the caller streams them to a ``CheckpointWriter`` or copies them
into a live model.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from evomerge.errors import ConfigError, ModelError
from evomerge.io.checkpoint import TensorSource, require_finite
from evomerge.io.naming import (
    LAYER_COUNT_KEYS,
    TensorInfo,
    classify,
    is_tied,
    num_layers_of,
    tied_source,
)
from evomerge.io.writer import TensorSlot
from evomerge.merge.params import resolve
from evomerge.merge.registry import MergeMethod, ParamSpec, get_method
from evomerge.recipe import MergeRecipe, Parameters

if TYPE_CHECKING:
    from evomerge.merge.statistics import Statistics

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64,
}


def parse_dtype(name: str | None, what: str = "dtype") -> torch.dtype | None:
    if name is None:
        return None
    try:
        return DTYPES[str(name).lower()]
    except KeyError:
        raise ConfigError(f"{what} {name!r} is not one of float32, float16, bfloat16, "
                          "float64") from None


@dataclass
class TensorTask:
    """How to produce one output tensor."""

    out: TensorSlot
    info: TensorInfo
    inputs: list[tuple[str, str]]  # (model, tensor name) for each non-base input, recipe order
    base: tuple[str, str] | None
    shared: dict[str, Any] = field(default_factory=dict)
    per_model: dict[str, list[Any]] = field(default_factory=dict)
    copy_only: bool = False  # non-float tensors: copied from the reference model
    seed: int = 0
    method: MergeMethod | None = None  # the slice's own method (None: the recipe's)


@dataclass
class _Group:
    """One set of inputs merged together: all models (``models:``) or one output slice."""

    models: list[str]  # inputs in recipe order
    base: str | None
    params: dict[str, Parameters | None]  # per-model parameters
    scopes: list[Parameters | None]  # shared scopes, most specific first
    method: MergeMethod | None = None  # a slice's own merge_method (evomerge extension)


class MergePlan:
    """A validated recipe bound to its tensor sources."""

    def __init__(self, recipe: MergeRecipe, sources: Mapping[str, TensorSource],
                 method: MergeMethod, tasks: list[TensorTask], config: dict[str, Any] | None,
                 reference: str, seed: int, allow_nonfinite: bool = False,
                 check_inputs: bool = True, statistics: Statistics | None = None) -> None:
        self.allow_nonfinite = allow_nonfinite
        self.statistics = statistics
        self.check_inputs = check_inputs
        self.recipe = recipe
        self.sources = sources
        self.method = method
        self.tasks = tasks
        self.config = config
        self.reference = reference
        self.seed = seed

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def build(cls, recipe: MergeRecipe, sources: Mapping[str, TensorSource], *, seed: int = 0,
              out_dtype: torch.dtype | None = None, allow_nonfinite: bool = False,
              check_inputs: bool = True, statistics: Statistics | None = None) -> MergePlan:
        """``allow_nonfinite``: let NaN/Inf in inputs or results through (by default a merge
        stops with one line naming the tensor and model). ``check_inputs=False`` skips the
        input check for sources already checked when they were loaded (the search's live
        merges: once per search, not once per candidate). ``statistics``: the inputs'
        statistics for data-dependent methods (``merge.statistics.prepare``)."""
        method = get_method(recipe.merge_method)
        missing = [m for m in recipe.referenced_models() if m not in sources]
        if missing:
            raise ModelError(f"no tensor source given for model {missing[0]!r}")
        out_dtype = out_dtype or parse_dtype(recipe.out_dtype, "out_dtype") or parse_dtype(
            recipe.dtype)
        check_parameter_names(recipe)
        builder = _Builder(recipe, sources, method, seed, out_dtype)
        tasks, config, reference = (builder.from_slices() if recipe.slices
                                    else builder.from_models())
        return cls(recipe, sources, method, tasks, config, reference, seed, allow_nonfinite,
                   check_inputs, statistics)

    # -- running ----------------------------------------------------------------------------
    def slots(self) -> list[TensorSlot]:
        return [task.out for task in self.tasks]

    def compute(self, task: TensorTask, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The merged tensor for one task, in the task's output dtype, on ``device``."""
        if task.copy_only:
            model, name = task.inputs[0]
            return self.sources[model].get(name).to(device)

        def load(ref: tuple[str, str]) -> torch.Tensor:
            t = self.sources[ref[0]].get(ref[1]).to(device=device, dtype=dtype,
                                                    non_blocking=True)
            if self.check_inputs and not self.allow_nonfinite:
                require_finite(t, ref[1], ref[0], " (allow_nonfinite / --allow-nonfinite to "
                               "merge anyway)")
            return t

        tensors = [load(ref) for ref in task.inputs]
        base = load(task.base) if task.base is not None else None
        method = self.method_of(task)
        kwargs: dict[str, Any] = {}
        for spec in method.shared:
            kwargs[spec.arg] = task.shared[spec.name]
        for spec in method.per_model:
            kwargs[spec.arg] = task.per_model[spec.name]
        generator = None
        if method.stochastic:
            # on the CPU whatever the device: the same seed gives the same merge everywhere
            generator = torch.Generator().manual_seed(task.seed)
        stats = None
        if method.statistics is not None:
            if self.statistics is None:
                raise ConfigError(f"{method.name} needs {method.statistics} statistics: give "
                                  "the recipe a data: block")
            stats = [self.statistics.get(method.statistics, m, name) for m, name in task.inputs]
            stats = [None if s is None or not _fits(method.statistics, s, t)
                     else s.to(device=device, dtype=dtype)
                     for s, t in zip(stats, tensors, strict=True)]
        out = method(tensors, base, generator=generator, kind=task.info.kind, stats=stats,
                     **kwargs).to(task.out.dtype)
        if not self.allow_nonfinite and not bool(torch.isfinite(out).all()):
            raise ModelError(f"merged tensor {task.out.name} holds NaN or infinite values "
                             f"({method.name} overflowed {task.out.dtype}? check the weights)")
        return out

    def method_of(self, task: TensorTask) -> MergeMethod:
        return task.method or self.method

    def tensors(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
                ) -> Iterator[tuple[TensorTask, torch.Tensor]]:
        for task in self.tasks:
            yield task, self.compute(task, device, dtype)

    def merge_to_dict(self, device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        return {task.out.name: t for task, t in self.tensors(device, dtype)}

    def merge_into(self, module: torch.nn.Module, dtype: torch.dtype = torch.float32) -> None:
        """Copy merged tensors into a live model in place (no disk). Tied parameters appear
        once in the module's state dict and are written once."""
        state = module.state_dict(keep_vars=True)
        device = next(module.parameters()).device
        with torch.no_grad():
            for task in self.tasks:
                target = state.get(task.out.name)
                if target is None:
                    raise ModelError(f"the live model has no parameter {task.out.name}")
                target.copy_(self.compute(task, device, dtype))


def check_parameter_names(recipe: MergeRecipe) -> None:
    """Refuse a parameter no method of the recipe takes (``densty: 0.5``), naming the closest
    one: mergekit ignores such keys and merges with the default, which a typo should not do.
    A key in a slice or its sources must suit that slice's method; a recipe-wide key must suit
    at least one method the recipe uses."""
    import difflib

    def check(params: Parameters | None, methods: list[MergeMethod], where: str) -> None:
        valid = sorted({p.name for m in methods for p in m.params()})
        for key in params or {}:
            if key in valid:
                continue
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            names = "/".join(sorted({m.name for m in methods}))
            takes = ", ".join(valid) if valid else "no parameters"
            raise ConfigError(f"{where}: unknown parameter {key!r} for {names} ({hint}"
                              f"it takes: {takes})")

    method = get_method(recipe.merge_method)
    used = [method]
    for k, s in enumerate(recipe.slices or []):
        own = get_method(s.merge_method) if s.merge_method else method
        used.append(own)
        check(s.parameters, [own], f"slice {k}")
        for j, src in enumerate(s.sources):
            check(src.parameters, [own], f"slice {k} source {j} ({src.model})")
    for m in recipe.models or []:
        check(m.parameters, [method], f"model {m.model!r}")
    check(recipe.parameters, used, "parameters")


def stable_seed(seed: int, name: str) -> int:
    """Per-tensor seed independent of tensor order, so results do not depend on scheduling."""
    return zlib.crc32(f"{seed}:{name}".encode()) & 0x7FFFFFFF


class _Builder:
    def __init__(self, recipe: MergeRecipe, sources: Mapping[str, TensorSource],
                 method: MergeMethod, seed: int, out_dtype: torch.dtype | None) -> None:
        self.recipe = recipe
        self.sources = sources
        self.method = method
        self.seed = seed
        self.out_dtype = out_dtype

    # -- input groups -----------------------------------------------------------------------
    def _split_base(self, group: _Group, where: str) -> tuple[list[str], str | None]:
        """(non-base inputs, base) for this method's base policy; checks input counts."""
        m = group.method or self.method
        if m.base == "input":
            inputs, base = list(group.models), None
        else:
            base = group.base
            inputs = [x for x in group.models if x != base]
            if m.base == "required" and base is None:
                raise ConfigError(f"{m.name} needs a base_model{where}")
        n = len(inputs)
        if n < m.min_models or (m.max_models is not None and n > m.max_models):
            want = (f"exactly {m.min_models}" if m.max_models == m.min_models
                    else f"at least {m.min_models}" if m.max_models is None
                    else f"{m.min_models} to {m.max_models}")
            kind = "input model" if m.base == "input" else "model besides the base"
            raise ConfigError(f"{m.name} takes {want} {kind}{'s' if want != 'exactly 1' else ''}"
                              f", got {n}{where}")
        return inputs, base

    def from_models(self) -> tuple[list[TensorTask], dict[str, Any] | None, str]:
        r = self.recipe
        assert r.models is not None
        models = [m.model for m in r.models]
        if r.base_model and r.base_model not in models and self.method.base != "input":
            models.append(r.base_model)
        group = _Group(models=models, base=r.base_model,
                       params={m.model: m.parameters for m in r.models},
                       scopes=[r.parameters])
        inputs, base = self._split_base(group, "")
        reference = r.base_model if r.base_model else models[0]
        ref = self.sources[reference]
        n_layers = num_layers_of(ref.config, ref.names())
        tasks = []
        for name in ref.names():
            info = classify(name)
            t = _layer_t(info.layer, 0, n_layers)
            refs = {m: name for m in set(inputs) | ({base} if base else set())}
            tasks.append(self._task(name, info, refs, inputs, base, reference, group, t))
        return tasks, copy.deepcopy(ref.config), reference

    def from_slices(self) -> tuple[list[TensorTask], dict[str, Any] | None, str]:
        r = self.recipe
        assert r.slices is not None
        groups: list[tuple[_Group, list[str], str | None]] = []
        for k, s in enumerate(r.slices):
            where = f" (slice {k})"
            lengths = {src.layer_range[1] - src.layer_range[0] for src in s.sources}
            if len(lengths) != 1:
                raise ConfigError(f"all sources of slice {k} must span the same number of layers")
            models = [src.model for src in s.sources]
            if len(set(models)) != len(models):
                raise ConfigError(f"slice {k} names the same model twice")
            base = s.base_model or r.base_model
            method = get_method(s.merge_method) if s.merge_method else self.method
            if base is not None and base not in models and method.base != "input":
                if method.base == "required":
                    raise ConfigError(f"the base model {base!r} must be one of the sources of "
                                      f"slice {k} for {method.name}")
                base = None
            group = _Group(models=models, base=base,
                           params={src.model: src.parameters for src in s.sources},
                           scopes=[s.parameters, r.parameters],
                           method=method if s.merge_method else None)
            inputs, base = self._split_base(group, where)
            for src in s.sources:
                n = num_layers_of(self.sources[src.model].config, self.sources[src.model].names())
                if src.layer_range[1] > n:
                    raise ConfigError(f"slice {k}: layer_range {list(src.layer_range)} is beyond "
                                      f"the {n} layers of model {src.model!r}")
            groups.append((group, inputs, base))

        ref_model = r.base_model or r.slices[0].sources[0].model
        ref = self.sources.get(ref_model, None)
        tasks: list[TensorTask] = []
        first_group, last_group = groups[0], groups[-1]
        first_src = r.slices[0].sources[0].model
        last_src = r.slices[-1].sources[0].model
        # tensors outside the layers: embeddings from the first slice, the rest from the last
        for name in self.sources[first_src].names():
            info = classify(name)
            if info.layer is not None or info.kind != "embedding":
                continue
            g, inputs, base = first_group
            refs = {m: name for m in g.models}
            tasks.append(self._task(name, info, refs, inputs, base, first_src, g, 0.0))
        out_layer = 0
        layer_sources: list[int] = []
        layer_scales: list[float] = []
        for (g, inputs, base), s in zip(groups, r.slices, strict=False):
            length = s.sources[0].layer_range[1] - s.sources[0].layer_range[0]
            lead = s.sources[0]
            by_layer: dict[int, list[TensorInfo]] = {}
            for name in self.sources[lead.model].names():
                info = classify(name)
                if info.layer is not None:
                    by_layer.setdefault(info.layer, []).append(info)
            for idx in range(length):
                t = _layer_t(idx, 0, length)
                src_layer = lead.layer_range[0] + idx
                for info in by_layer.get(src_layer, []):
                    refs = {src.model: info.with_layer(src.layer_range[0] + idx)
                            for src in s.sources}
                    out_name = info.with_layer(out_layer)
                    out_info = classify(out_name)
                    tasks.append(self._task(out_name, out_info, refs, inputs, base, lead.model, g,
                                            t))
                layer_sources.append(src_layer)
                last = idx == length - 1 and s.output_scale is not None
                layer_scales.append(float(s.output_scale) if last else 1.0)  # type: ignore[arg-type]
                out_layer += 1
        for name in self.sources[last_src].names():
            info = classify(name)
            if info.layer is not None or info.kind == "embedding":
                continue
            g, inputs, base = last_group
            refs = {m: name for m in g.models}
            tasks.append(self._task(name, info, refs, inputs, base, last_src, g, 0.0))
        config = copy.deepcopy((ref or self.sources[first_src]).config)
        if config is not None:
            _set_layer_count(config, out_layer, layer_sources)
            if any(x != 1.0 for x in layer_scales):  # read back by merge.stack.load_scaled_model
                config["evomerge_output_scales"] = layer_scales
        return tasks, config, ref_model if ref is not None else first_src

    # -- one tensor -------------------------------------------------------------------------
    def _task(self, out_name: str, info: TensorInfo, refs: dict[str, str], inputs: list[str],
              base: str | None, reference: str, group: _Group, t: float) -> TensorTask:
        ref_src = self.sources[reference]
        ref_name = refs.get(reference, out_name)
        resolved: dict[str, str] = {}
        for model, name in refs.items():
            src = self.sources[model]
            if name in src:
                resolved[model] = name
                continue
            tied = tied_source(name, set(src.names()))
            if tied is not None and (is_tied(src.config) or src.config is None):
                resolved[model] = tied
                continue
            raise ModelError(f"tensor {name} is missing in model {model!r} "
                             f"(present in {reference!r})")
        shape = tuple(ref_src.shape(resolved.get(reference, ref_name)))
        for model, name in resolved.items():
            other = tuple(self.sources[model].shape(name))
            if other != shape:
                vocab = info.kind in ("embedding", "head") and other[1:] == shape[1:]
                hint = ("; the vocabularies differ: set tokenizer_source: union (or base) to "
                        "align rows by token" if vocab else "")
                raise ModelError(f"shape mismatch for tensor {name}: model {model!r} has "
                                 f"{list(other)}, {reference!r} has {list(shape)}{hint}")
        stored = ref_src.dtype(resolved.get(reference, ref_name))
        if not stored.is_floating_point:
            slot = TensorSlot(out_name, shape, stored)
            return TensorTask(out=slot, info=info, inputs=[(reference, resolved[reference])],
                              base=None, copy_only=True)
        slot = TensorSlot(out_name, shape, self.out_dtype or stored)
        method = group.method or self.method
        shared = {p.name: self._value(method, p, group.scopes, out_name, t, None)
                  for p in method.shared}
        per_model = {p.name: [self._value(method, p, [group.params.get(m), *group.scopes],
                                          resolved[m], t, m) for m in inputs]
                     for p in method.per_model}
        return TensorTask(
            out=slot, info=info, inputs=[(m, resolved[m]) for m in inputs],
            base=(base, resolved[base]) if base is not None else None,
            shared=shared, per_model=per_model, seed=stable_seed(self.seed, out_name),
            method=group.method,
        )

    def _value(self, method: MergeMethod, spec: ParamSpec, scopes: list[Parameters | None],
               tensor: str, t: float, model: str | None) -> Any:
        where = f" for model {model!r}" if model else ""
        try:
            value = resolve(spec.name, scopes, tensor, t, spec.validate)
        except ConfigError as exc:
            raise ConfigError(f"{method.name}: {exc}{where} (tensor {tensor})") from None
        if value is None:
            if spec.required:
                raise ConfigError(f"{method.name}: parameter {spec.name} is required"
                                  f"{where} (tensor {tensor})")
            return spec.default
        return value


def _layer_t(layer: int | None, start: int, count: int) -> float:
    """Position of a layer in its slice in [0, 1], as mergekit computes gradients over it."""
    if layer is None:
        return 0.0
    if count <= 1:
        return 1.0
    return (layer - start) / (count - 1)


def _set_layer_count(config: dict[str, Any], n: int, layer_sources: list[int]) -> None:
    """Stacked models: update the layer count and per-layer lists (e.g. ``layer_types``)."""
    targets = [config] + ([config["text_config"]] if isinstance(config.get("text_config"), dict)
                          else [])
    for cfg in targets:
        for key in LAYER_COUNT_KEYS:
            if isinstance(cfg.get(key), int):
                cfg[key] = n
        for key in ("layer_types",):
            values = cfg.get(key)
            if isinstance(values, list) and values and max(layer_sources) < len(values):
                cfg[key] = [values[i] for i in layer_sources]


def _fits(kind: str, stat: torch.Tensor, tensor: torch.Tensor) -> bool:
    """Whether a statistic still describes the tensor (rows re-aligned to a merged vocabulary
    no longer match their Fisher: the method then averages that tensor)."""
    if kind in ("gram", "gram_pp"):
        return tensor.dim() == 2 and stat.shape == (tensor.shape[1], tensor.shape[1])
    return stat.shape == tensor.shape
