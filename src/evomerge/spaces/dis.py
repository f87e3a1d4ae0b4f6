"""Depth-wise integration search (DIS, "Fine, I'll Merge It Myself"): which layers, from
which models, in which order, at each depth.

For each output position p (one per layer of the base): a scale in [0, 2] on the hidden state
leaving the position, include flags for each candidate block (layer p of each model, each
optionally ``repeat`` times), and an order value per candidate (the included blocks run in
increasing order). A position with nothing included runs the base's layer p; a stack deeper
than ``max_depth`` layers is rejected (the search scores it as the worst). A genome becomes a
passthrough slices recipe, one slice per block, the position's scale on its last block; the
search evaluates it as a model built from the input models' own layer modules (no copies,
merge/stack.py) and exports it as a stacked checkpoint.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from evomerge.errors import ConfigError
from evomerge.recipe import MergeRecipe
from evomerge.spaces.base import SPACES, Gene, SearchSpace, SpaceInputs, SpaceOptions
from evomerge.spaces.base import short_name as _short

SWITCH = ("off", "on")


class DISOptions(SpaceOptions):
    type: Literal["dis"] = "dis"
    scale: tuple[float, float] = (0.0, 2.0)  # bounds of each position's output scale
    repeat: int = Field(default=1, ge=1)  # times each model's layer may appear
    max_depth: int | None = Field(default=None, ge=1)  # default twice the base's depth


@SPACES.register("dis")
class DISSpace(SearchSpace):
    stacks_models = True
    Options = DISOptions

    @classmethod
    def build(cls, options: DISOptions, inputs: SpaceInputs) -> DISSpace:
        return cls(inputs.models, inputs.base, inputs.num_layers, repeat=options.repeat,
                   max_depth=options.max_depth, scale=options.scale)

    def __init__(self, models: list[str], base: str, num_layers: int, *, repeat: int = 1,
                 max_depth: int | None = None, scale: tuple[float, float] = (0.0, 2.0)) -> None:
        if repeat < 1:
            raise ConfigError("repeat must be >= 1")
        self.base, self.num_layers = base, num_layers
        self.sources = [base] + [m for m in models if m != base]
        self.repeat = repeat
        self.max_depth = max_depth or 2 * num_layers
        if self.max_depth < num_layers:
            raise ConfigError(f"max_depth {self.max_depth} is below the base's "
                              f"{num_layers} layers")
        self.candidates = [(m, r) for m in self.sources for r in range(repeat)]
        self.genes: list[Gene] = []
        for p in range(num_layers):
            self.genes.append(Gene(f"p{p}.scale", *scale))
            for m, r in self.candidates:
                name = f"p{p}.{_short(m)}" + (f"#{r}" if repeat > 1 else "")
                self.genes.append(Gene(f"{name}.include", 0, 1, 1, choices=SWITCH))
                self.genes.append(Gene(f"{name}.order", 0.0, 1.0, active=(f"{name}.include", 1)))

    def _name(self, p: int, m: str, r: int) -> str:
        return f"p{p}.{_short(m)}" + (f"#{r}" if self.repeat > 1 else "")

    def blocks(self, genome: np.ndarray) -> list[list[str]]:
        """Per position, the models whose layer p runs there, in order."""
        x = self.repair(genome)
        out = []
        for p in range(self.num_layers):
            chosen = [(x[self.index[self._name(p, m, r) + ".order"]], i, m)
                      for i, (m, r) in enumerate(self.candidates)
                      if x[self.index[self._name(p, m, r) + ".include"]] >= 0.5]
            out.append([m for _, _, m in sorted(chosen)] or [self.base])
        return out

    def to_recipe(self, genome: np.ndarray) -> MergeRecipe:
        x = self.repair(genome)
        positions = self.blocks(x)
        depth = sum(len(b) for b in positions)
        if depth > self.max_depth:
            raise ConfigError(f"a stack of {depth} layers exceeds max_depth {self.max_depth}")
        slices: list[dict[str, Any]] = []
        for p, models in enumerate(positions):
            scale = float(x[self.index[f"p{p}.scale"]])
            for j, m in enumerate(models):
                sl: dict[str, Any] = {"sources": [{"model": m, "layer_range": [p, p + 1]}]}
                if j == len(models) - 1 and scale != 1.0:
                    sl["output_scale"] = scale
                slices.append(sl)
        return MergeRecipe.model_validate({"merge_method": "passthrough", "slices": slices})

    def endpoints(self) -> list[np.ndarray]:
        """Each input model alone at every position, unit scales: that model exactly."""
        out = []
        for m in self.sources:
            x = np.array([(g.low + g.high) / 2 for g in self.genes])
            for p in range(self.num_layers):
                x[self.index[f"p{p}.scale"]] = 1.0
                for mm, r in self.candidates:
                    x[self.index[self._name(p, mm, r) + ".include"]] = float(mm == m and r == 0)
            out.append(self.repair(x))
        return out
