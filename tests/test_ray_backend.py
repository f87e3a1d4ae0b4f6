"""The ray backend on a local Ray cluster (2 CPU workers): the same run record as the local
backend, and a worker killed mid-run loses nothing."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from evomerge.config import load_config
from evomerge.run.loop import evolve

from .test_evolve import config as base_config

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # each test starts a Ray cluster


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


def config(zoo: Path, run_dir: Path, backend: dict) -> dict:
    return base_config(zoo, run_dir, backend=backend, write_best=False)


def comparable(run_dir: Path) -> dict[str, dict]:
    """Each evaluation by key, without what may differ between backends (timings, worker)."""
    out = {}
    for line in (run_dir / "evaluations.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rec.pop("seconds")
        rec.pop("worker")
        out[rec["key"]] = rec
    return out


def test_a_killed_worker_loses_no_candidate(tiny_zoo: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from evomerge.run.backends.ray_actors import RayBackend

    backends: list[RayBackend] = []
    original = RayBackend.__init__

    def keep(self: RayBackend, *args: object) -> None:
        original(self, *args)
        backends.append(self)

    monkeypatch.setattr(RayBackend, "__init__", keep)
    killed: list[int] = []
    messages: list[str] = []

    def kill_one_worker(phase: str, done: int, total: int, msg: str) -> None:
        messages.append(msg)
        if phase == "search" and done >= 2 and not killed and backends:
            # a worker busy with a candidate, by the pid its actor reported at start
            busy = sorted(backends[0].busy)
            if busy:
                killed.append(backends[0].actor_pids[busy[0]])
                os.kill(killed[0], signal.SIGKILL)

    cfg = config(tiny_zoo, tmp_path / "run", {"name": "ray", "workers": 2})
    cfg["optimizer"] = {"name": "ga", "pop_size": 6, "generations": 3}
    evolve(load_config(cfg), progress=kill_one_worker)
    assert killed
    assert any("retried" in m for m in messages)  # its in-flight candidates ran again
    recs = [json.loads(line)
            for line in (tmp_path / "run" / "evaluations.jsonl").read_text().splitlines()]
    keys = [r["key"] for r in recs]
    assert len(keys) == len(set(keys))  # nothing recorded twice
    cands = [r for r in recs if r["kind"] == "candidate"]
    per_gen = {g: sorted(r["index"] for r in cands if r["generation"] == g) for g in range(3)}
    # every asked candidate of every generation is recorded (GA may ask fewer when a
    # generation's offspring duplicate earlier ones, never more)
    assert per_gen[0] == list(range(6))
    assert all(idx == list(range(len(idx))) and idx for idx in per_gen.values())
    reference = comparable_without_kill(tiny_zoo, tmp_path)
    assert {k: v for k, v in reference.items()} == {
        r["key"]: {k: v for k, v in r.items() if k not in ("seconds", "worker")} for r in recs}


def comparable_without_kill(zoo: Path, tmp_path: Path) -> dict[str, dict]:
    cfg = config(zoo, tmp_path / "reference", {"name": "local"})
    cfg["optimizer"] = {"name": "ga", "pop_size": 6, "generations": 3}
    evolve(load_config(cfg))
    return comparable(tmp_path / "reference")


def test_a_local_run_cut_short_resumes_on_ray(tiny_zoo: Path, tmp_path: Path) -> None:
    full = evolve(load_config(config(tiny_zoo, tmp_path / "full", {"name": "local"})))
    cut = tmp_path / "cut"
    cut.mkdir()
    lines = (tmp_path / "full" / "evaluations.jsonl").read_text().splitlines(keepends=True)
    (cut / "evaluations.jsonl").write_text("".join(lines[: len(lines) // 2]))
    cfg = config(tiny_zoo, cut, {"name": "ray", "workers": 2})
    (cut / "config.yaml").write_text(json.dumps(cfg))
    resumed = evolve(load_config(cfg), resume=True)
    assert resumed.new_evaluations == len(lines) - len(lines) // 2  # only what was missing
    assert comparable(cut) == comparable(tmp_path / "full")
    assert resumed.best_recipe == full.best_recipe and resumed.test == full.test


def test_smac_trials_run_in_parallel_on_the_workers(tiny_zoo: Path, tmp_path: Path) -> None:
    pytest.importorskip("smac")
    cfg = config(tiny_zoo, tmp_path / "run", {"name": "ray", "workers": 2})
    cfg.update(space={"type": "lfs", "layer_granularity": 1, "weight": [0, 2]},
               optimizer={"name": "smac", "trials": 12, "min_items": 20, "max_items": 180})
    result = evolve(load_config(cfg))
    recs = [json.loads(line) for line in (tmp_path / "run" / "evaluations.jsonl")
            .read_text().splitlines()]
    cands = [r for r in recs if r["kind"] == "candidate"]
    assert {r["worker"] for r in cands} == {0, 1}
    per_recipe: dict[str, list[str]] = {}
    for r in cands:  # still no item twice for one candidate
        ids = per_recipe.setdefault(json.dumps(r["recipe"], sort_keys=True), [])
        assert not set(ids) & set(r["tasks"]["add_it"]["ids"])
        ids += r["tasks"]["add_it"]["ids"]
    assert len(result.history) == 12
