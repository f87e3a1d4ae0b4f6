"""Helpers shared by tests: run evomerge and mergekit on the same recipe, load outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file

from evomerge.merge.disk import merge_to_disk
from evomerge.recipe import load_recipe


def load_model_tensors(path: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def run_evomerge(recipe: dict[str, Any], out: Path, **options: Any) -> dict[str, torch.Tensor]:
    merge_to_disk(load_recipe(recipe), out, **options)
    return load_model_tensors(out)


def run_mergekit(recipe: dict[str, Any], out: Path, seed: int | None = None
                 ) -> dict[str, torch.Tensor]:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    cfg = MergeConfiguration.model_validate(yaml.safe_load(yaml.safe_dump(recipe)))
    run_merge(cfg, str(out), options=MergeOptions(quiet=True, copy_tokenizer=False,
                                                  write_model_card=False, random_seed=seed))
    return load_model_tensors(out)


def assert_same_tensors(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor],
                        rtol: float = 1e-5) -> None:
    assert set(ours) == set(theirs), set(ours) ^ set(theirs)
    for name in theirs:
        a, b = ours[name], theirs[name]
        assert a.shape == b.shape and a.dtype == b.dtype, name
        scale = float(b.float().abs().max()) or 1.0
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * scale, msg=lambda m, n=name:
                                   f"{n}: {m}")


def record_calls(monkeypatch: Any, owner: Any, name: str) -> list[tuple[Any, ...]]:
    """Wrap ``owner.name`` so that each call's positional arguments are recorded (the real
    function still runs): how tests count work that must be done only once."""
    calls: list[tuple[Any, ...]] = []
    real = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls
