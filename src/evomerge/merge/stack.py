"""Layer stacking in memory: a passthrough slices recipe (one source per slice, e.g. a
depth-wise integration candidate) built as a model whose decoder layers are the input
models' own layer modules, shared, never copied.

Each output layer may scale its output hidden state (``output_scale`` of its slice, an
evomerge extension); ``ScaledBlock`` does that, and ``load_scaled_model`` rebuilds the same
wrapping for a checkpoint written by ``merge_to_disk`` (whose config.json then carries
``evomerge_output_scales``). Llama-family layouts (``model.layers``, ``model.embed_tokens``,
``model.norm``, ``lm_head``): Llama, Mistral, Qwen2, Gemma and their kin.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from evomerge.errors import ConfigError, ModelError
from evomerge.recipe import MergeRecipe

SCALES_KEY = "evomerge_output_scales"


class ScaledBlock(torch.nn.Module):
    """A decoder layer whose output hidden state is multiplied by ``scale``."""

    def __init__(self, block: torch.nn.Module, scale: float) -> None:
        super().__init__()
        self.block = block
        self.scale = float(scale)
        if hasattr(block, "attention_type"):
            self.attention_type = block.attention_type

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.block(*args, **kwargs)
        if isinstance(out, tuple):
            return (out[0] * self.scale, *out[1:])
        return out * self.scale


def _parts(model: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(model, "lm_head"):
        raise ModelError(f"layer stacking in memory supports Llama-family models, not "
                         f"{type(model).__name__}")
    return inner


def _set_depth(model: torch.nn.Module, blocks: list[torch.nn.Module],
               layer_types: list[str] | None) -> None:
    _parts(model).layers = torch.nn.ModuleList(blocks)
    model.config.num_hidden_layers = len(blocks)
    if layer_types is not None:
        model.config.layer_types = layer_types
    # shared layers keep their original layer_idx: no KV cache across repeated indices
    model.config.use_cache = False
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.use_cache = False


def stack_plan(recipe: MergeRecipe) -> list[tuple[str, int, float]]:
    """(model, source layer, output scale) per output layer of a stacking recipe."""
    if recipe.merge_method != "passthrough" or not recipe.slices:
        raise ConfigError("in-memory stacking needs a passthrough recipe with slices")
    out = []
    for k, s in enumerate(recipe.slices):
        if len(s.sources) != 1:
            raise ConfigError(f"slice {k}: stacking takes one source per slice")
        src = s.sources[0]
        for i in range(*src.layer_range):
            last = i == src.layer_range[1] - 1
            out.append((src.model, i, s.output_scale if last and s.output_scale is not None
                        else 1.0))
    return out


class LiveStacker:
    """Builds stacked candidates into one shell model from models held once in memory."""

    def __init__(self, models: dict[str, torch.nn.Module], shell: torch.nn.Module) -> None:
        self.models = models
        self.shell = shell
        for m in models.values():
            _parts(m)
        self.last_seconds = 0.0

    @torch.no_grad()
    def apply(self, recipe: MergeRecipe) -> float:
        start = time.perf_counter()
        plan = stack_plan(recipe)
        missing = [m for m, _, _ in plan if m not in self.models]
        if missing:
            raise ModelError(f"no model loaded for {missing[0]!r}")
        blocks, types = [], []
        for model, layer, scale in plan:
            inner = _parts(self.models[model])
            if layer >= len(inner.layers):
                raise ConfigError(f"layer {layer} is beyond the {len(inner.layers)} layers "
                                  f"of {model!r}")
            block = inner.layers[layer]
            blocks.append(block if scale == 1.0 else ScaledBlock(block, scale))
            lt = getattr(self.models[model].config, "layer_types", None)
            types.append(lt[layer] if lt else None)
        first, last = self.models[plan[0][0]], self.models[plan[-1][0]]
        shell = _parts(self.shell)
        shell.embed_tokens = _parts(first).embed_tokens  # as the planner: embeddings from
        shell.norm = _parts(last).norm  # the first slice, the rest from the last
        self.shell.lm_head = last.lm_head
        _set_depth(self.shell, blocks, types if all(types) else None)  # type: ignore[arg-type]
        self.last_seconds = time.perf_counter() - start
        return self.last_seconds


def load_scaled_model(path: str | Path, **kwargs: Any) -> torch.nn.Module:
    """``AutoModelForCausalLM.from_pretrained`` plus the output scales a stacked checkpoint
    records in its config (``evomerge_output_scales``); without them, the plain model."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    scales = getattr(model.config, SCALES_KEY, None)
    if scales:
        inner = _parts(model)
        if len(scales) != len(inner.layers):
            raise ModelError(f"{path}: {len(scales)} output scales for "
                             f"{len(inner.layers)} layers")
        inner.layers = torch.nn.ModuleList(
            [b if s == 1.0 else ScaledBlock(b, s) for b, s in zip(inner.layers, scales,
                                                                  strict=True)])
    return model
