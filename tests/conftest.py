"""Shared fixtures: tiny real checkpoints written once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """arch -> [base, ft1, ft2] tiny float32 checkpoints for every supported architecture."""
    from evomerge.zoo.tiny import ARCHITECTURES, make_family

    root = tmp_path_factory.mktemp("tiny")
    return {arch: make_family(arch, root / arch, n_finetunes=2, seed=i)
            for i, arch in enumerate(ARCHITECTURES)}


@pytest.fixture(scope="session")
def llama(families: dict[str, list[Path]]) -> list[Path]:
    return families["llama"]


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway zoo (hidden 32, 2 layers, a few training steps) for search tests."""
    import copy

    from evomerge.zoo.build import ZOO_RECIPE, build_zoo

    recipe = copy.deepcopy(ZOO_RECIPE)
    recipe["model"] = {"hidden": 32, "layers": 2}
    recipe["base"].update(steps=40, batch=32, warmup=5)
    recipe["expert_training"].update(steps=20, batch=16, lr=3e-3)
    recipe["experts"] = {"math_en": ["add_en"], "lang_it": ["num_it", "max_it"]}
    root = tmp_path_factory.mktemp("zoo") / "zoo"
    build_zoo(root, recipe, log=lambda s: None)
    return root
