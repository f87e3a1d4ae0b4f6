"""Reorganising the code must not change what a search does: five small searches on the
committed zoo (every space, optimizer kind and estimator family) give the records, best
recipe, test scores and history recorded before the change (tests/golden_runs.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.golden_runs import GOLDEN, run_all


def _same(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        assert sorted(a) == sorted(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {len(a)} != {len(b)} entries"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.slow
def test_searches_give_the_recorded_results(tmp_path: Path) -> None:
    golden = json.loads(GOLDEN.read_text())
    now = run_all(tmp_path)
    assert sorted(now) == sorted(golden)
    for name in golden:
        _same(now[name], golden[name], name)
