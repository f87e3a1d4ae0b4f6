"""SMAC + Hyperband over the LFS space on a tiny zoo: nested fidelities that never evaluate
an item twice for one candidate, exact resume, ParEGO for two objectives, rejected
configurations scored as the worst."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evomerge.config import load_config
from evomerge.errors import ConfigError, EvomergeError
from evomerge.run.loop import evolve

pytest.importorskip("smac")


def config(zoo: Path, run_dir: Path, **over: object) -> dict:
    cfg = {
        "base_model": str(zoo / "base"), "models": [str(zoo / "math_en"), str(zoo / "lang_it")],
        "space": {"type": "lfs", "layer_granularity": 1, "weight": [0, 2]},
        "tasks": [{"name": "add_it", "zoo": "add_it"}],
        "optimizer": {"name": "smac", "trials": 14, "min_items": 20, "max_items": 180},
        "run_dir": str(run_dir), "seed": 1, "write_best": False, "test_top_k": 1,
    }
    cfg.update(over)
    return cfg


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_smac_hyperband_reuses_items_across_fidelities_and_resumes_exactly(
        tiny_zoo: Path, tmp_path: Path) -> None:
    messages: list[str] = []
    result = evolve(load_config(config(tiny_zoo, tmp_path / "full")),
                    progress=lambda phase, done, total, msg: messages.append(msg))
    recs = [r for r in records(tmp_path / "full") if r["kind"] == "candidate"]
    budgets = sorted({r["budget"] for r in recs})
    assert budgets[0] == 20 and budgets[-1] == 180 and len(budgets) == 3  # eta 3: 20, 60, 180
    order = json.loads(json.dumps(
        __import__("yaml").safe_load((tmp_path / "full" / "subsets.yaml").read_text())))
    ids = order["add_it"]["ids"]
    by_recipe: dict[str, list[dict]] = {}
    for r in recs:
        by_recipe.setdefault(json.dumps(r["recipe"], sort_keys=True), []).append(r)
    promoted = 0
    for group in by_recipe.values():
        seen: list[str] = []
        for r in group:
            new = r["tasks"]["add_it"]["ids"]
            assert not set(new) & set(seen)  # no item twice for one candidate
            seen += new
            assert sorted(seen) == sorted(ids[: r["budget"]])  # nested: the first b items
        promoted += len(group) > 1
    assert promoted >= 1  # Hyperband promoted some candidates to higher budgets
    # the best is chosen at the highest budget
    best = max((r for r in recs if r["budget"] == 180), key=lambda r: r["estimates"]["add_it"])
    assert result.best_recipe.model_dump(mode="json", exclude_none=True) == best["recipe"]
    # progress and fitness.png show the best at the highest budget seen, never a 20-item 1.0
    top, running = 0, float("-inf")
    for h in result.history:
        if h["budget"] > top:
            top, running = h["budget"], h["mean"]
        elif h["budget"] == top:
            running = max(running, h["mean"])
        assert (h["best_budget"], h["best"]) == (top, running)
    shown = [m for m in messages if " at " in m and "items" in m]
    budgets = [int(m.split(" at ")[1].split(" items")[0]) for m in shown]
    assert budgets == sorted(budgets) and budgets[-1] == 180
    assert f"best {best['estimates']['add_it']:.3f} at 180 items" in shown[-1]
    # a run cut in half resumes to the same record (SMAC replays from the store)
    lines = (tmp_path / "full" / "evaluations.jsonl").read_text().splitlines(keepends=True)
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "evaluations.jsonl").write_text("".join(lines[: len(lines) // 2]))
    cfg = config(tiny_zoo, cut)
    (cut / "config.yaml").write_text(json.dumps(cfg))
    resumed = evolve(load_config(cfg), resume=True)
    assert resumed.new_evaluations == len(lines) - len(lines) // 2

    def strip(rs: list[dict]) -> dict:
        return {r["key"]: {k: v for k, v in r.items() if k not in ("seconds",)} for r in rs}

    assert strip(records(cut)) == strip(records(tmp_path / "full"))
    assert resumed.test == result.test


def test_parego_for_two_objectives(tiny_zoo: Path, tmp_path: Path) -> None:
    cfg = config(tiny_zoo, tmp_path / "run",
                 tasks=[{"name": "add_it", "zoo": "add_it"}, {"name": "max_it", "zoo": "max_it"}],
                 optimizer={"name": "smac", "trials": 8, "min_items": 20, "max_items": 60})
    result = evolve(load_config(cfg))
    assert result.pareto and (tmp_path / "run" / "pareto.png").exists()
    recs = [r for r in records(tmp_path / "run") if r["kind"] == "candidate"]
    assert all(set(r["estimates"]) == {"add_it", "max_it"} for r in recs)


def test_rejected_configurations_get_the_worst_score(tiny_zoo: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from evomerge.spaces.lfs import LFSSpace

    real = LFSSpace.to_recipe
    calls = {"n": 0}

    def sometimes_rejected(self, genome: np.ndarray):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise ConfigError("stack deeper than the maximum")  # as a space may reject
        return real(self, genome)

    monkeypatch.setattr(LFSSpace, "to_recipe", sometimes_rejected)
    history = []
    result = evolve(load_config(config(tiny_zoo, tmp_path / "run",
                                       optimizer={"name": "smac", "trials": 9,
                                                  "min_items": 20, "max_items": 60})))
    history = result.history
    assert len(history) == 9 and sum(h["mean"] == 0.0 for h in history) >= 3


@pytest.mark.parametrize("optimizer, message", [
    ({"name": "smac", "max_items": 5000}, "exceeds"),
    ({"name": "smac", "min_items": 300, "max_items": 100}, "min_items"),
])
def test_bad_fidelity_bounds_fail_before_any_work(tiny_zoo: Path, tmp_path: Path,
                                                  optimizer: dict, message: str) -> None:
    with pytest.raises(EvomergeError, match=message):
        evolve(load_config(config(tiny_zoo, tmp_path / "run", optimizer=optimizer)))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_resume_in_another_process_with_another_hash_seed(tiny_zoo: Path, tmp_path: Path
                                                          ) -> None:
    """SMAC's own set ordering depends on PYTHONHASHSEED; a resumed process has another."""
    import os
    import subprocess
    import sys

    import yaml

    def cli(args: list[str], hash_seed: str) -> None:
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-m", "evomerge.cli", *args, "-q"], check=True,
                       env=env, capture_output=True)

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(config(tiny_zoo, tmp_path / "full",
                                              optimizer={"name": "smac", "trials": 20,
                                                         "min_items": 20, "max_items": 60})))
    cli(["evolve", str(cfg_path)], "1")
    lines = (tmp_path / "full" / "evaluations.jsonl").read_text().splitlines(keepends=True)
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "evaluations.jsonl").write_text("".join(lines[: len(lines) // 3]))
    (cut / "config.yaml").write_text((tmp_path / "full" / "config.yaml").read_text())
    cli(["evolve", "--resume", str(cut)], "2")

    def strip(run: Path) -> dict:
        return {r["key"]: {k: v for k, v in r.items() if k not in ("seconds",)}
                for r in records(run)}

    assert strip(cut) == strip(tmp_path / "full")


@pytest.mark.slow
def test_two_task_smac_on_the_demo_zoo_runs_and_resumes(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """ParEGO with Hyperband: SMAC's default incumbent selection compared Pareto members run
    at different budgets and failed an assertion after 9 evaluations (issue 14, point 4)."""
    from evomerge.run.store import RunStore
    from evomerge.zoo.manifest import ZOO_DIR

    def cfg(run: Path) -> dict:
        return config(ZOO_DIR, run, tasks=[{"name": "add_it", "zoo": "add_it"},
                                           {"name": "max_it", "zoo": "max_it"}],
                      optimizer={"name": "smac", "trials": 20, "min_items": 20,
                                 "max_items": 180})

    full = evolve(load_config(cfg(tmp_path / "full")))
    assert len(full.history) == 20 and len(full.pareto) >= 1
    original, count = RunStore.add, [0]

    def add(self: RunStore, record: dict) -> None:
        original(self, record)
        count[0] += 1
        if count[0] == 12:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(RunStore, "add", add)
        with pytest.raises(KeyboardInterrupt):
            evolve(load_config(cfg(tmp_path / "cut")))
    resumed = evolve(load_config(cfg(tmp_path / "cut")), resume=True)
    assert resumed.history == full.history and resumed.pareto == full.pareto
    assert resumed.test == full.test
