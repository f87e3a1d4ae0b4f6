"""docs/extending.md's worked example: a new estimator is one file. The example's code block
is run as that file would be (registering itself), and a search uses it by name with no other
change; its candidates' estimates are the rule of succession of their recorded answers."""

from __future__ import annotations

import json
import re
import types
from pathlib import Path

import pytest

from evomerge.config import load_config
from evomerge.errors import ConfigError
from evomerge.fitness import ESTIMATORS
from evomerge.run.loop import evolve
from evomerge.zoo.manifest import ZOO_DIR

DOC = Path(__file__).resolve().parent.parent / "docs" / "extending.md"


@pytest.fixture
def laplace_estimator() -> object:
    text = DOC.read_text()
    code = re.search(r"<!-- example: estimator -->\n```python\n(.*?)```", text, re.S)
    assert code is not None
    module = types.ModuleType("evomerge.fitness.estimators.laplace")
    exec(compile(code.group(1), "laplace.py", "exec"), module.__dict__)  # noqa: S102
    yield module
    ESTIMATORS._items.pop("laplace", None)


def test_the_documented_estimator_is_one_file(laplace_estimator: object, tmp_path: Path
                                              ) -> None:
    cfg = {"base_model": str(ZOO_DIR / "base"),
           "models": [str(ZOO_DIR / "math_en"), str(ZOO_DIR / "lang_it")],
           "tasks": [{"name": "add_it", "zoo": "add_it"}],
           "fitness": {"subset_size": 12, "estimator": "laplace", "calibration_merges": 0},
           "optimizer": {"name": "ga", "pop_size": 4, "generations": 2},
           "write_best": False, "run_dir": str(tmp_path / "run")}
    evolve(load_config(cfg))
    cands = [json.loads(line) for line in (tmp_path / "run" / "evaluations.jsonl")
             .read_text().splitlines() if '"candidate"' in line]
    assert len(cands) >= 4
    for rec in cands:
        correct = rec["tasks"]["add_it"]["correct"]
        assert len(correct) == 12
        assert rec["estimates"]["add_it"] == pytest.approx((sum(correct) + 1) / 14)


def test_an_unknown_estimator_names_the_closest(laplace_estimator: object) -> None:
    with pytest.raises(ConfigError, match="did you mean 'laplace'"):
        load_config({"base_model": "b", "models": ["m"], "tasks": [{"name": "t", "zoo": "x"}],
                     "fitness": {"estimator": "laplac"}})
