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
