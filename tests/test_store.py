"""RunStore and Termination on their own (whole runs exercise them in test_evolve and
test_reliability): what is added is on disk at once and read back in order; a key is
recorded once; the stopping rules each end a search where they say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evomerge.config import load_config
from evomerge.optim import Termination, Trial
from evomerge.run.store import RECORD_FILE, RunStore, recipe_key


def _record(key: str, kind: str = "candidate") -> dict:
    return {"key": key, "kind": kind, "split": "search", "recipe": {"merge_method": "linear"},
            "tasks": {"t": {"ids": ["a", "b"], "correct": [1, 0], "accuracy": 0.5}},
            "estimates": {"t": 0.5}}


def test_records_are_on_disk_when_added_and_read_back_in_order(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    for k in ("k1", "k2", "k3"):
        store.add(_record(k, "test" if k == "k2" else "candidate"))
        # flushed and fsynced: another reader sees it before the store is closed
        assert json.loads((tmp_path / RECORD_FILE).read_text().splitlines()[-1])["key"] == k
    with pytest.raises(RuntimeError, match="already recorded"):
        store.add(_record("k1"))
    store.close()
    again = RunStore(tmp_path)
    assert again.order == ["k1", "k2", "k3"]
    assert [r["key"] for r in again.of_kind("candidate")] == ["k1", "k3"]
    assert again.get("k2") == _record("k2", "test")
    again.close()


def test_the_key_depends_on_the_recipe_and_what_it_was_evaluated_on() -> None:
    r = {"merge_method": "linear", "models": [{"model": "a"}]}
    assert recipe_key(r, "candidate", "search", "t:1,2") == recipe_key(
        dict(reversed(list(r.items()))), "candidate", "search", "t:1,2")  # key order free
    assert recipe_key(r, "candidate", "search", "t:1,2") != recipe_key(r, "candidate",
                                                                       "search", "t:1,3")
    assert recipe_key(r, "candidate", "search") != recipe_key(r, "test", "search")


def _tell(term: Termination, best: float, items: int = 10) -> None:
    term.update([Trial(np.zeros(1), 0)], np.array([[-best]]), items)


def test_termination_rules() -> None:
    term = Termination(generations=3)
    for _ in range(3):
        assert not term.done(_Never())
        _tell(term, 0.5)
    assert term.done(_Never()) and term.reason == "3 generations"
    term = Termination(item_budget=25)
    _tell(term, 0.1), _tell(term, 0.2)
    assert not term.done(_Never())
    _tell(term, 0.3)
    assert term.done(_Never()) and "item budget" in term.reason
    term = Termination(patience=2)
    for best in (0.1, 0.3, 0.3, 0.2):  # improves, improves, then two steps without
        assert not term.done(_Never())
        _tell(term, best)
    assert term.done(_Never()) and "patience" in term.reason


class _Never:
    done = False


@pytest.mark.slow
def test_patience_ends_a_search_early(tmp_path: Path) -> None:
    from evomerge.run.loop import evolve
    from evomerge.zoo.manifest import ZOO_DIR

    cfg = {"base_model": str(ZOO_DIR / "base"),
           "models": [str(ZOO_DIR / "math_en"), str(ZOO_DIR / "lang_it")],
           "tasks": [{"name": "add_it", "zoo": "add_it"}],
           "fitness": {"subset_size": 10, "estimator": "mean", "calibration_merges": 0},
           "optimizer": {"name": "random", "pop_size": 4, "generations": 30, "patience": 2},
           "write_best": False, "run_dir": str(tmp_path / "run")}
    result = evolve(load_config(cfg))
    bests = [h["best"] for h in result.history]
    assert 3 <= len(bests) < 30
    # it stopped because the last two generations did not beat the best before them
    assert max(bests[-2:]) <= max(bests[:-2])
