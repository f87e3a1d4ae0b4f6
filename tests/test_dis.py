"""The DIS space: configuration -> stacking recipe -> a model built from shared layer
modules, equal to its exported checkpoint; endpoints reproduce their model exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from evomerge.errors import ConfigError
from evomerge.merge.disk import merge_to_disk
from evomerge.merge.stack import LiveStacker, load_scaled_model
from evomerge.spaces import DISSpace


def load(path: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def setup(llama: list[Path]):  # noqa: ANN201
    base, ft1, ft2 = (str(p) for p in llama)
    models = {m: load(m) for m in (base, ft1, ft2)}
    stacker = LiveStacker(models, load(base))
    ids = torch.randint(3, 30, (2, 9), generator=torch.Generator().manual_seed(0))
    return base, [ft1, ft2], models, stacker, ids


@torch.no_grad()
def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits


def test_endpoint_configurations_give_the_endpoints_exact_logits(setup) -> None:  # noqa: ANN001
    base, fts, models, stacker, ids = setup
    space = DISSpace(fts, base, num_layers=4, repeat=2)
    for genome, m in zip(space.endpoints(), [base, *fts], strict=True):
        stacker.apply(space.to_recipe(genome))
        assert torch.equal(logits(stacker.shell, ids), logits(models[m], ids))


def test_a_deeper_scaled_stack_equals_its_exported_checkpoint(setup, tmp_path: Path
                                                              ) -> None:  # noqa: ANN001
    base, fts, models, stacker, ids = setup
    space = DISSpace(fts, base, num_layers=4, repeat=2, max_depth=24)
    rng = np.random.default_rng(3)
    x = space.repair(rng.uniform(*space.bounds))
    for p in range(4):  # at least two blocks at position 1, a non-unit scale everywhere
        x[space.index[f"p{p}.scale"]] = 0.7 + 0.2 * p
    x[space.index[f"p1.{Path(fts[0]).name}#0.include"]] = 1
    x[space.index[f"p1.{Path(fts[1]).name}#1.include"]] = 1
    recipe = space.to_recipe(x)
    depth = sum(len(b) for b in space.blocks(x))
    assert depth > 4
    stacker.apply(recipe)
    layers = stacker.shell.model.layers
    assert len(layers) == depth
    # shared modules, not copies: every block's weights are an input model's own tensors
    own = {t.data_ptr() for m in models.values() for t in m.parameters()}
    assert all(p.data_ptr() in own for p in layers.parameters())
    live = logits(stacker.shell, ids)
    out = merge_to_disk(recipe, tmp_path / "stacked")
    exported = load_scaled_model(out, dtype=torch.float32).eval()
    torch.testing.assert_close(logits(exported, ids), live, rtol=1e-5, atol=1e-5)
    assert exported.config.num_hidden_layers == depth


def test_unit_scales_export_a_plain_checkpoint(setup, tmp_path: Path) -> None:  # noqa: ANN001
    base, fts, models, stacker, ids = setup
    space = DISSpace(fts, base, num_layers=4)
    x = space.endpoints()[1].copy()
    x[space.index[f"p2.{Path(base).name}.include"]] = 1  # base layer 2 then ft1's layer 2
    x[space.index[f"p2.{Path(base).name}.order"]] = 0.1
    x[space.index[f"p2.{Path(fts[0]).name}.order"]] = 0.9
    recipe = space.to_recipe(x)
    stacker.apply(recipe)
    out = merge_to_disk(recipe, tmp_path / "plain")
    plain = load(str(out))
    assert not hasattr(plain.config, "evomerge_output_scales")
    assert plain.config.num_hidden_layers == 5
    torch.testing.assert_close(logits(plain, ids), logits(stacker.shell, ids), rtol=1e-5,
                               atol=1e-5)


def test_stacks_beyond_max_depth_are_rejected(llama: list[Path]) -> None:
    base, ft1, ft2 = (str(p) for p in llama)
    space = DISSpace([ft1, ft2], base, num_layers=4, max_depth=5)
    x = np.array([g.high for g in space.genes])  # everything included: 12 layers
    with pytest.raises(ConfigError, match="exceeds max_depth 5"):
        space.to_recipe(x)
    with pytest.raises(ConfigError, match="below"):
        DISSpace([ft1], base, num_layers=4, max_depth=3)


def test_dis_search_with_smac_on_a_tiny_zoo(tiny_zoo: Path, tmp_path: Path) -> None:
    pytest.importorskip("smac")
    from evomerge.config import load_config
    from evomerge.run.loop import evolve

    cfg = {"base_model": str(tiny_zoo / "base"),
           "models": [str(tiny_zoo / "math_en"), str(tiny_zoo / "lang_it")],
           "space": {"type": "dis", "max_depth": 3},  # 2 base layers; deeper stacks rejected
           "tasks": [{"name": "add_it", "zoo": "add_it"}],
           "optimizer": {"name": "smac", "trials": 10, "min_items": 20, "max_items": 60},
           "run_dir": str(tmp_path / "run"), "test_top_k": 1}
    result = evolve(load_config(cfg))
    import json

    recs = [json.loads(line) for line in (tmp_path / "run" / "evaluations.jsonl")
            .read_text().splitlines() if '"candidate"' in line]
    assert recs and all(len(r["recipe"]["slices"]) <= 3 for r in recs)  # deeper: rejected
    assert len(result.history) == 10
    best = load_scaled_model(tmp_path / "run" / "best", dtype=torch.float32)
    assert 2 <= best.config.num_hidden_layers <= 3
    assert result.best_recipe.merge_method == "passthrough"


def test_dis_with_a_genetic_algorithm_scores_rejected_stacks_worst(tiny_zoo: Path,
                                                                  tmp_path: Path) -> None:
    from evomerge.config import load_config
    from evomerge.run.loop import evolve

    cfg = {"base_model": str(tiny_zoo / "base"),
           "models": [str(tiny_zoo / "math_en"), str(tiny_zoo / "lang_it")],
           "space": {"type": "dis", "max_depth": 2},  # only one block per position allowed
           "tasks": [{"name": "add_it", "zoo": "add_it"}],
           "fitness": {"subset_size": 10, "estimator": "mean", "calibration_merges": 0},
           "optimizer": {"name": "ga", "pop_size": 8, "generations": 2},
           "run_dir": str(tmp_path / "run"), "write_best": False, "test_top_k": 1}
    result = evolve(load_config(cfg))
    import json

    cands = [json.loads(line) for line in (tmp_path / "run" / "evaluations.jsonl")
             .read_text().splitlines() if '"candidate"' in line]
    assert all(len(r["recipe"]["slices"]) == 2 for r in cands)
    assert len(cands) < 16  # random genomes often stack deeper: rejected, not evaluated
    assert result.best_recipe.merge_method == "passthrough"
