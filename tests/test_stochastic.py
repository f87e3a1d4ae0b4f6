"""DARE and DELLA: reproducible for a seed, and the same kept fraction and rescaling
statistics as mergekit 0.1.5."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from .helpers import load_model_tensors, run_evomerge, run_mergekit

METHODS = ["dare_linear", "dare_ties", "della", "della_linear"]


def single_model_recipe(method: str, base: str, ft: str, density: float) -> dict[str, Any]:
    params: dict[str, Any] = {"weight": 1.0, "density": density}
    if method.startswith("della"):
        params["epsilon"] = 0.1
    return {"merge_method": method, "base_model": base, "dtype": "float32",
            "models": [{"model": ft, "parameters": params}],
            "parameters": {"normalize": False}}


def stats(merged: dict[str, torch.Tensor], base: dict[str, torch.Tensor],
          ft: dict[str, torch.Tensor]) -> dict[str, float]:
    """Kept fraction, L1 ratio and how much more often large deltas survive than small."""
    kept = total = 0
    l1_out = l1_in = 0.0
    top_kept = bottom_kept = top_n = bottom_n = 0
    for name, m in merged.items():
        if name not in base or m.dim() < 2:
            continue
        delta = ft[name] - base[name]
        out = m - base[name]
        keep = out != 0
        kept += int(keep.sum())
        total += keep.numel()
        l1_out += float(out.abs().sum())
        l1_in += float(delta.abs().sum())
        mags = delta.abs()
        hi, lo = mags.quantile(0.75) if mags.numel() < 16_000_000 else 0, mags.quantile(0.25)
        top_kept += int(keep[mags >= hi].sum())
        top_n += int((mags >= hi).sum())
        bottom_kept += int(keep[mags <= lo].sum())
        bottom_n += int((mags <= lo).sum())
    return {"kept": kept / total, "l1_ratio": l1_out / l1_in,
            "top_minus_bottom": top_kept / top_n - bottom_kept / bottom_n}


@pytest.mark.parametrize("method", METHODS)
def test_kept_fraction_and_rescale_match_mergekit(llama: list[Path], tmp_path: Path,
                                                  method: str) -> None:
    base, ft1, _ = (str(p) for p in llama)
    density = 0.3
    recipe = single_model_recipe(method, base, ft1, density)
    base_t, ft_t = load_model_tensors(Path(base)), load_model_tensors(Path(ft1))
    ours = stats(run_evomerge(recipe, tmp_path / "ours", seed=1), base_t, ft_t)
    theirs = stats(run_mergekit(recipe, tmp_path / "mk", seed=1), base_t, ft_t)
    assert ours["kept"] == pytest.approx(density, abs=0.01)
    assert theirs["kept"] == pytest.approx(density, abs=0.01)
    # rescaling preserves the task vector's L1 norm (exactly in mergekit, in expectation here)
    assert ours["l1_ratio"] == pytest.approx(1.0, abs=0.03)
    assert ours["l1_ratio"] == pytest.approx(theirs["l1_ratio"], abs=0.03)
    if method.startswith("della"):
        # MagPrune keeps large deltas more often: p rises by 2 * epsilon across the ranks
        # expected: top quartile ~ p(0.875), bottom ~ p(0.125), a difference of 0.75 * 2 * eps
        assert ours["top_minus_bottom"] == pytest.approx(0.15, abs=0.025)
        assert theirs["top_minus_bottom"] == pytest.approx(0.15, abs=0.025)
    else:
        assert abs(ours["top_minus_bottom"]) < 0.02


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_output_other_seed_differs(llama: list[Path], tmp_path: Path,
                                                  method: str) -> None:
    base, ft1, ft2 = (str(p) for p in llama)
    params = {"weight": 0.5, "density": 0.5}
    recipe = {"merge_method": method, "base_model": base,
              "models": [{"model": ft1, "parameters": params},
                         {"model": ft2, "parameters": params}]}
    a = run_evomerge(recipe, tmp_path / "a", seed=7)
    b = run_evomerge(recipe, tmp_path / "b", seed=7)
    c = run_evomerge(recipe, tmp_path / "c", seed=8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_della_rejects_epsilon_that_leaves_the_unit_interval(llama: list[Path],
                                                             tmp_path: Path) -> None:
    from evomerge.errors import ConfigError

    base, ft1, _ = (str(p) for p in llama)
    recipe = single_model_recipe("della", base, ft1, 0.1)
    recipe["models"][0]["parameters"]["epsilon"] = 0.2
    with pytest.raises(ConfigError, match="epsilon"):
        run_evomerge(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()
