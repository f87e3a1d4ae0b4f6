"""The README's promises under attack (issue 13): never lose a user's files or a finished
evaluation, one-line errors, a locked and verified run directory, confined inputs, finite
numbers, validation before work, no leaked temporaries, bounded evaluation memory.

Each section is one numbered case of the issue; every test fails on the code before it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from evomerge.cli import main
from evomerge.config import EvolveConfig, load_config
from evomerge.errors import ConfigError, EvomergeError, ModelError
from evomerge.run.loop import evolve

from .test_evolve import config as evolve_config


# -- helpers -------------------------------------------------------------------------------
def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    return int(info.value.code or 0), capsys.readouterr().err


def assert_one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in err, (n, err)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its content hash."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def recipe_file(path: Path, base: Path, *models: Path, **params: object) -> Path:
    path.write_text(yaml.safe_dump({
        "merge_method": "task_arithmetic", "base_model": str(base),
        "models": [{"model": str(m), "parameters": {"weight": 0.5, **params}} for m in models]}))
    return path


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def wait_until(condition: Callable[[], object], step: float = 0.05) -> None:
    """Poll ``condition`` (a process's progress seen on disk) for up to two minutes."""
    deadline = time.time() + 120
    while not condition() and time.time() < deadline:
        time.sleep(step)


def start_evolve(zoo: Path, tmp_path: Path, pop_size: int, generations: int
                 ) -> tuple[subprocess.Popen[str], Path, dict]:
    """A real ``evomerge evolve`` process on the tiny zoo; returns it, its record, config."""
    cfg = evolve_config(zoo, tmp_path / "run", optimizer={"name": "ga", "pop_size": pop_size,
                                                           "generations": generations})
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    # a shell running this suite in the background ignores SIGINT for its children: give
    # the process the default disposition a user's terminal gives it
    proc = subprocess.Popen([sys.executable, "-m", "evomerge", "evolve", str(cfg_path), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, tmp_path / "run" / "evaluations.jsonl", cfg


def n_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
def project(llama: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's project directory (the current directory): recipe, models, own notes."""
    proj = tmp_path / "project"
    models = proj / "models"
    models.mkdir(parents=True)
    base, ft1, ft2 = (copy_model(p, models / p.name) for p in llama)
    recipe_file(proj / "recipe.yaml", base, ft1, ft2)
    (proj / "notes.txt").write_text("my notes")
    monkeypatch.chdir(proj)
    return proj


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *, readonly: bool = False) -> Iterator[Path]:
    """A real small (or read-only) file system; needs root (CI runs as root)."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs",
                                            str(path)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# == 1. --force / --fresh never delete what evomerge did not write =========================
@pytest.mark.parametrize("args, needle", [
    (["merge", "recipe.yaml", "-o", ".", "--force"], "current directory"),
    (["merge", "recipe.yaml", "-o", "models", "--force"], "holds the input"),
    (["merge", "recipe.yaml", "-o", "models/ft1", "--force"], "holds the input"),
    (["demo", "--run-dir", ".", "--fresh", "-q"], "current directory"),
    (["demo", "--run-dir", "models", "--fresh", "-q"], "--fresh refuses"),
])
def test_force_or_fresh_onto_the_project_or_its_inputs_is_refused(
        project: Path, args: list[str], needle: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(project)
    code, err = run_cli(args, capsys)
    assert_one_line(code, err, needle)
    assert snapshot(project) == before


def test_force_replaces_its_own_output_but_not_a_users_directory(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["merge", "recipe.yaml", "-o", "out", "-q"], capsys)[0] == 0
    assert json.loads((project / "out" / ".evomerge").read_text())["kind"] == "model"
    assert run_cli(["merge", "recipe.yaml", "-o", "out", "--force", "-q"], capsys)[0] == 0
    mine = project / "mine"
    mine.mkdir()
    (mine / "data.txt").write_text("precious")
    code, err = run_cli(["merge", "recipe.yaml", "-o", "mine", "--force"], capsys)
    assert_one_line(code, err, "did not write")
    (project / "out" / "my_eval.json").write_text("{}")  # a user's file inside our output
    code, err = run_cli(["merge", "recipe.yaml", "-o", "out", "--force"], capsys)
    assert_one_line(code, err, "my_eval.json")
    assert (mine / "data.txt").read_text() == "precious"
    assert (project / "out" / "my_eval.json").exists()


def test_python_api_has_the_same_guard(project: Path) -> None:
    import evomerge

    before = snapshot(project)
    with pytest.raises(EvomergeError, match="current directory"):
        evomerge.merge("recipe.yaml", ".", force=True)
    assert snapshot(project) == before


def test_evolve_fresh_discards_only_its_own_run(tiny_zoo: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = load_config(evolve_config(tiny_zoo, run, optimizer={"name": "random",
                                                              "pop_size": 2,
                                                              "generations": 1}))
    evolve(cfg)
    with pytest.raises(ConfigError, match="--fresh to discard"):
        evolve(cfg)
    assert evolve(cfg, fresh=True).new_evaluations > 0
    (run / "notes.md").write_text("mine")
    with pytest.raises(EvomergeError, match="notes.md"):
        evolve(cfg, fresh=True)
    assert (run / "notes.md").read_text() == "mine"


# == 2. the run record: a torn last line is dropped, anything else stops =====================
@pytest.fixture(scope="module")
def finished_run(tiny_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("rec") / "run"
    evolve(load_config(evolve_config(tiny_zoo, run)))
    return run


@pytest.mark.parametrize("garbage", [b"this is not json\n", b"\xff\xfe\x00garbage\x9c\n",
                                     b"{}\n", b"42\n", b"\n"])
def test_garbage_inside_the_record_stops_resume_and_report_and_keeps_every_line(
        finished_run: Path, tmp_path: Path, garbage: bytes,
        capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    lines = (run / "evaluations.jsonl").read_bytes().splitlines(keepends=True)
    assert len(lines) >= 15
    damaged = b"".join(lines[:5]) + garbage + b"".join(lines[5:])
    (run / "evaluations.jsonl").write_bytes(damaged)
    code, err = run_cli(["report", str(run)], capsys)
    assert_one_line(code, err, "evaluations.jsonl:6")
    code, err = run_cli(["evolve", "--resume", str(run), "-q"], capsys)
    assert_one_line(code, err, "evaluations.jsonl:6")
    assert (run / "evaluations.jsonl").read_bytes() == damaged  # never rewritten


def test_a_torn_last_line_is_set_aside_and_the_run_completes(
        tiny_zoo: Path, finished_run: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    for name in ("result.json", "report.md"):
        (run / name).unlink()
    lines = (run / "evaluations.jsonl").read_bytes().splitlines(keepends=True)
    torn = lines[9][: len(lines[9]) // 2]  # killed while writing the 10th record
    (run / "evaluations.jsonl").write_bytes(b"".join(lines[:9]) + torn)
    code, _ = run_cli(["report", str(run)], capsys)
    assert code == 0  # report reads a run being written: the torn tail is skipped
    cfg = load_config(run / "config.yaml").model_copy(update={"run_dir": str(run)})
    result = evolve(cfg, resume=True)
    assert result.new_evaluations == len(lines) - 9
    def strip(raw: list[bytes]) -> list[dict]:  # the records without their timings
        return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in raw]

    again = (run / "evaluations.jsonl").read_bytes().splitlines(keepends=True)
    assert strip(again) == strip(lines)  # the same evaluations again, each once
    assert (run / "evaluations.jsonl.torn").read_bytes() == torn + b"\n"


# == 3. SMAC resume is identical to an undisturbed run ========================================
def _smac_config(zoo: Path, run: Path, **opt: object) -> dict:
    return evolve_config(zoo, run, fitness={"subset_size": 10},
                         optimizer={"name": "smac", "trials": 12, "min_items": 20,
                                    "max_items": 180, **opt})


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Ctrl-C once ``n`` more records are written (a real KeyboardInterrupt unwinds the
    run, as a user's Ctrl-C or a SIGTERM does)."""
    from evomerge.run.store import RunStore

    original = RunStore.add
    count = [0]

    def add(self: RunStore, record: dict) -> None:
        original(self, record)
        count[0] += 1
        if count[0] == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunStore, "add", add)


@pytest.mark.parametrize("opt", [{"item_budget": 300}, {}])
def test_smac_resume_after_an_interrupt_ends_where_an_undisturbed_run_ends(
        tiny_zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opt: dict) -> None:
    pytest.importorskip("smac")
    full = evolve(load_config(_smac_config(tiny_zoo, tmp_path / "full", **opt)))
    cfg = load_config(_smac_config(tiny_zoo, tmp_path / "cut", **opt))
    with monkeypatch.context() as m:
        _interrupt_after(m, 5)
        with pytest.raises(KeyboardInterrupt):
            evolve(cfg)
    resumed = evolve(cfg, resume=True)
    assert len(resumed.history) == len(full.history)
    assert resumed.history == full.history
    assert resumed.best_recipe == full.best_recipe and resumed.test == full.test
    assert resumed.evaluations == full.evaluations


def test_more_trials_on_resume_extend_a_smac_run_exactly(tiny_zoo: Path,
                                                         tmp_path: Path) -> None:
    pytest.importorskip("smac")
    full = evolve(load_config(_smac_config(tiny_zoo, tmp_path / "full", trials=12)))
    short = evolve(load_config(_smac_config(tiny_zoo, tmp_path / "short", trials=7)))
    assert len(short.history) == 7
    longer = evolve(load_config(_smac_config(tiny_zoo, tmp_path / "short", trials=12)),
                    resume=True)
    assert longer.history == full.history and longer.best_recipe == full.best_recipe


# == 4. one process per run directory =========================================================
@pytest.mark.slow
def test_a_second_process_on_a_running_run_directory_gets_one_line(
        tiny_zoo: Path, tmp_path: Path) -> None:
    first, record, cfg = start_evolve(tiny_zoo, tmp_path, 6, 60)
    wait_until(lambda: n_lines(record))
    try:
        for kwargs in ({"resume": True}, {"fresh": True}):
            with pytest.raises(EvomergeError, match=f"in use by another evomerge process "
                                                    f"\\(pid {first.pid}\\)"):
                evolve(load_config(cfg), **kwargs)
        assert first.poll() is None  # still running: the refusal did not wait for it
    finally:
        first.terminate()
        first.wait(timeout=120)
    keys = [json.loads(line)["key"] for line in record.read_text().splitlines()]
    assert keys and len(keys) == len(set(keys))  # nothing recorded twice
    assert evolve(load_config(cfg), resume=True).evaluations >= len(keys)  # lock released


@pytest.mark.slow
def test_the_lock_is_held_by_another_process_for_the_cli(finished_run: Path, tmp_path: Path
                                                          ) -> None:
    from evomerge.run.store import RunLock

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = snapshot(run)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; "
                               "from evomerge.run.store import RunLock; "
                               f"RunLock({str(run)!r}); print('locked', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"  # type: ignore[union-attr]
        proc = subprocess.run([sys.executable, "-m", "evomerge", "evolve", "--resume", str(run),
                               "-q"], capture_output=True, text=True, timeout=120)
        assert_one_line(proc.returncode, proc.stderr, f"(pid {holder.pid})")
    finally:
        holder.kill()
        holder.wait()
    RunLock(run).release()  # a dead holder's lock is gone with it
    assert snapshot(run) == before


# == 5. a resume checks the config and the inputs ============================================
@pytest.mark.slow
def test_more_generations_on_resume_equal_an_undisturbed_longer_run(tmp_path: Path) -> None:
    from evomerge.recipe import load_recipe
    from evomerge.zoo.manifest import ZOO_DIR

    def cfg(run: Path, generations: int) -> EvolveConfig:  # the committed zoo: real accuracy
        return load_config(evolve_config(
            ZOO_DIR, run, seed=3, fitness={"subset_size": 20, "estimator": "mean"},
            optimizer={"name": "ga", "pop_size": 4, "generations": generations},
            final={"top_k": 1, "baselines": False}))  # the answer is the top candidate

    full = evolve(cfg(tmp_path / "full", 5))
    run = tmp_path / "run"
    short = evolve(cfg(run, 2))
    assert short.best_recipe != full.best_recipe  # so a stale best/ would be caught
    longer = evolve(cfg(run, 5), resume=True)
    assert longer.history == full.history and longer.best_recipe == full.best_recipe
    assert longer.test == full.test
    stored = json.loads((run / "result.json").read_text())["best_recipe"]
    assert load_recipe(stored) == full.best_recipe
    assert load_recipe(run / "best" / "mergekit_config.yml") == full.best_recipe


@pytest.mark.parametrize("change, needle", [
    ({"models": "swap"}, "models"),
    ({"fitness": {"subset_size": 12, "estimator": "gmpirt", "calibration_merges": 2,
                  "irt_dims": 2}}, "fitness.subset_size"),
    ({"seed": 4}, "seed"),
    ({"optimizer": {"name": "ga", "pop_size": 4, "generations": 1}}, "not shrink"),
])
def test_resume_refuses_a_config_that_changes_what_was_evaluated(
        tiny_zoo: Path, finished_run: Path, tmp_path: Path, change: dict, needle: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    if change.get("models") == "swap":
        change = {"models": [str(tiny_zoo / "math_en"), str(tiny_zoo / "compare_en")]}
    cfg.update(change)
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(cfg))
    before = snapshot(run)
    code, err = run_cli(["evolve", str(edited), "--resume", str(run), "-q"], capsys)
    assert_one_line(code, err, needle)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))  # the same, edited in place
    code, err = run_cli(["evolve", "--resume", str(run), "-q"], capsys)
    assert_one_line(code, err, needle)
    del before["config.yaml"]
    after = snapshot(run)
    del after["config.yaml"]
    assert after == before


def test_resume_refuses_a_model_replaced_in_place(tiny_zoo: Path, tmp_path: Path) -> None:
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    cfg = load_config(evolve_config(zoo, tmp_path / "run", optimizer={
        "name": "random", "pop_size": 2, "generations": 1}))
    evolve(cfg)
    weights = zoo / "lang_it" / "model.safetensors"
    state = load_file(str(weights))
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(ConfigError, match="lang_it/model.safetensors changed"):
        evolve(cfg, resume=True)


# == 6. exit codes: usage errors, Ctrl-C, SIGTERM ============================================
@pytest.mark.parametrize("args, needle", [
    (["merge", "r.yaml"], "Missing option"),
    (["merge", "r.yaml", "-o", "x", "--bogus"], "No such option: --bogus"),
    (["merge", "r.yaml", "-o", "x", "--seed", "abc"], "--seed"),
    (["mrege"], "No such command 'mrege'"),
    (["evolve", "--resume"], "requires an argument"),
])
def test_usage_errors_are_one_line_with_exit_2(args: list[str], needle: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line(*run_cli(args, capsys), needle)


def test_ctrl_c_during_a_merge_exits_130_and_writes_nothing(
        project: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from evomerge.merge.planner import MergePlan

    calls = [0]
    original = MergePlan.compute

    def compute(self: MergePlan, *a: object, **k: object) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == 5:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(MergePlan, "compute", compute)
    code, err = run_cli(["merge", "recipe.yaml", "-o", "new/out", "-q"], capsys)
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    assert not (project / "new").exists()  # nor the parent it had created
    assert sorted(p.name for p in project.iterdir()) == ["models", "notes.txt", "recipe.yaml"]


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_search_says_how_to_resume_and_resumes(
        tiny_zoo: Path, tmp_path: Path, sig: int, code: int) -> None:
    proc, record, _ = start_evolve(tiny_zoo, tmp_path, 4, 4)
    wait_until(lambda: n_lines(record) >= 8)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"interrupted: resume with evomerge evolve --resume {tmp_path / 'run'}")
    result = evolve(load_config(tmp_path / "run" / "config.yaml"), resume=True)  # lock freed
    assert result.new_evaluations > 0


# == 7. inputs are confined to their model directory =========================================
def _sharded(llama_base: Path, dst: Path, target: str) -> Path:
    shutil.copytree(llama_base, dst)
    names = list(load_file(str(dst / "model.safetensors")))
    (dst / "model.safetensors").rename(dst / "part.safetensors")
    (dst / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {n: (target if i == 0 else "part.safetensors")
                        for i, n in enumerate(names)}}))
    return dst


@pytest.mark.parametrize("target", ["../victim/model.safetensors", "ABSOLUTE", "link"])
def test_an_index_naming_a_file_outside_the_model_is_refused(
        llama: list[Path], tmp_path: Path, target: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    from evomerge.io.checkpoint import Checkpoint

    victim = tmp_path / "victim"
    shutil.copytree(llama[1], victim)
    if target == "ABSOLUTE":
        target = str(victim / "model.safetensors")
    model = _sharded(llama[2], tmp_path / "hostile", target)
    if target == "link":
        (model / "link").symlink_to(victim / "model.safetensors")
    with pytest.raises(ModelError, match="outside the model directory"):
        Checkpoint(model)
    recipe = recipe_file(tmp_path / "r.yaml", llama[0], llama[1], model)
    code, err = run_cli(["merge", str(recipe), "-o", str(tmp_path / "out")], capsys)
    assert_one_line(code, err, "outside the model directory")
    assert not (tmp_path / "out").exists()


def test_a_hugging_face_cache_snapshot_still_loads(llama: list[Path], tmp_path: Path) -> None:
    from evomerge.io.checkpoint import Checkpoint

    repo = tmp_path / "models--org--ft"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for f in llama[1].iterdir():
        shutil.copy(f, repo / "blobs" / f"sha-{f.name}")
        (snap / f.name).symlink_to(Path("../../blobs") / f"sha-{f.name}")
    ck = Checkpoint(snap)
    ref = load_file(str(llama[1] / "model.safetensors"))
    assert set(ck.names()) == set(ref)
    assert all(torch.equal(ck.get(n), ref[n]) for n in ref)


def test_an_index_placing_a_tensor_in_the_wrong_shard_is_one_line(
        llama: list[Path], tmp_path: Path) -> None:
    from evomerge.io.checkpoint import Checkpoint

    model = tmp_path / "m"
    shutil.copytree(llama[1], model)
    state = load_file(str(model / "model.safetensors"))
    names = sorted(state)
    half = len(names) // 2
    save_file({n: state[n] for n in names[:half]}, str(model / "a.safetensors"))
    save_file({n: state[n] for n in names[half:]}, str(model / "b.safetensors"))
    (model / "model.safetensors").unlink()
    (model / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {n: "a.safetensors" for n in names}}))
    with pytest.raises(ModelError, match=f"places tensor {names[-1]} in b.safetensors|"
                                         "does not hold it"):
        Checkpoint(model)


# == 8. non-finite numbers ===================================================================
def test_nan_in_an_input_model_is_one_line_naming_the_tensor(
        llama: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = copy_model(llama[2], tmp_path / "nan_ft")
    state = load_file(str(bad / "model.safetensors"))
    name = "model.layers.1.mlp.up_proj.weight"
    state[name][0, 0] = float("nan")
    save_file(state, str(bad / "model.safetensors"), metadata={"format": "pt"})
    recipe = recipe_file(tmp_path / "r.yaml", llama[0], llama[1], bad)
    code, err = run_cli(["merge", str(recipe), "-o", str(tmp_path / "out")], capsys)
    assert_one_line(code, err, name, "nan_ft", "NaN")
    assert not (tmp_path / "out").exists()
    assert run_cli(["merge", str(recipe), "-o", str(tmp_path / "out"), "--allow-nonfinite",
                    "-q"], capsys)[0] == 0
    assert torch.isnan(load_file(str(tmp_path / "out" / "model.safetensors"))[name]).any()


def test_infinite_recipe_weight_and_space_bound_are_refused(
        llama: list[Path], tiny_zoo: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"merge_method: task_arithmetic\nbase_model: {llama[0]}\nmodels:\n"
                      f"  - model: {llama[1]}\n    parameters: {{weight: .inf}}\n")
    code, err = run_cli(["merge", str(recipe), "-o", str(tmp_path / "out")], capsys)
    assert_one_line(code, err, "finite")
    cfg = evolve_config(tiny_zoo, tmp_path / "run", space={"type": "per_model",
                                                           "weight": [0, float("inf")]})
    with pytest.raises(ConfigError, match="finite"):
        load_config(cfg)
    assert not (tmp_path / "run").exists()


def test_a_search_whose_every_candidate_fails_ends_with_one_line(
        tiny_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = evolve_config(tiny_zoo, tmp_path / "run", merge_method="linear",
                        space={"type": "per_model", "weight": [0, 0]},
                        fitness={"subset_size": 10, "estimator": "mean"},
                        optimizer={"name": "random", "pop_size": 3, "generations": 1})
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    code, err = run_cli(["evolve", str(cfg_path), "-q"], capsys)
    assert_one_line(code, err, "no candidate could be merged", "sum")


def test_models_that_cannot_be_merged_stop_the_search_before_any_work(
        tiny_zoo: Path, llama: list[Path], tmp_path: Path) -> None:
    cfg = evolve_config(tiny_zoo, tmp_path / "run")
    cfg["models"] = [str(tiny_zoo / "math_en"), str(llama[1])]  # another vocabulary
    with pytest.raises(ModelError, match="shape mismatch|missing"):
        evolve(load_config(cfg))
    assert not (tmp_path / "run").exists()


# == 9. every mistake is found before any work or directory ===================================
@pytest.mark.parametrize("options, needle", [
    ({"stop": 5}, "stop must be"),
    ({"extract": "regex", "regex": "(unclosed"}, "regex '(unclosed' is invalid"),
    ({"max_new_token": 4}, "did you mean 'max_new_tokens'"),
    ({"extract": "last_nmber"}, "unknown extraction rule"),
])
def test_bad_task_options_stop_before_the_run_directory_exists(
        tiny_zoo: Path, tmp_path: Path, options: dict, needle: str) -> None:
    from evomerge.zoo.data import task_items

    for split in ("search", "test"):
        (tmp_path / f"{split}.jsonl").write_text("".join(
            json.dumps({"id": it.id, "prompt": it.prompt, "answer": it.answer}) + "\n"
            for it in task_items("add_it", split)))
    cfg = evolve_config(tiny_zoo, tmp_path / "run", tasks=[{
        "name": "mine", "search": str(tmp_path / "search.jsonl"),
        "test": str(tmp_path / "test.jsonl"), "options": options}])
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        evolve(load_config(cfg))
    assert not (tmp_path / "run").exists()


def test_config_mistakes_found_up_front(tiny_zoo: Path, tmp_path: Path) -> None:
    base = evolve_config(tiny_zoo, tmp_path / "run")
    cases = [
        ({"fitness": {"subset_size": 10, "responses": {"add_it": str(tmp_path / "no.npy")}}},
         "does not exist"),
        ({"tasks": [{"name": "t", "zoo": "add_it"}, {"name": "t", "zoo": "max_it"}]},
         "two tasks are named 't'"),
        ({"models": [str(tiny_zoo / "math_en")] * 2}, "listed twice"),
        ({"device": "gpu"}, "'gpu' is not a device"),
    ]
    for change, needle in cases:
        with pytest.raises(ConfigError, match=needle):
            evolve(load_config({**base, **change}))
        assert not (tmp_path / "run").exists(), change


def test_recipe_mistakes_found_before_any_directory(
        llama: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = yaml.safe_load(recipe_file(tmp_path / "r.yaml", llama[0], llama[1]).read_text())
    recipe["tokenizer_source"] = str(tmp_path / "no_such_model")
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "a" / "b" / "out"
    code, err = run_cli(["merge", str(tmp_path / "typo.yaml"), "-o", str(out)], capsys)
    assert_one_line(code, err, "tokenizer_source")
    assert not (tmp_path / "a").exists()
    twice = {"merge_method": "task_arithmetic", "base_model": str(llama[0]), "models": [
        {"model": str(llama[1]), "parameters": {"weight": 0.2}},
        {"model": str(llama[1]), "parameters": {"weight": 0.8}}]}
    (tmp_path / "twice.yaml").write_text(yaml.safe_dump(twice))
    code, err = run_cli(["merge", str(tmp_path / "twice.yaml"), "-o", str(out)], capsys)
    assert_one_line(code, err, "listed twice")


# == 10. temporary outputs never pile up =====================================================
def _big_family(root: Path) -> list[Path]:
    """Three 'models' of 3 x 48 MB float32 so a merge lasts long enough to be killed."""
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}
    paths = []
    gen = torch.Generator().manual_seed(0)
    for name in ("base", "a", "b"):
        d = root / name
        d.mkdir(parents=True)
        save_file({f"model.layers.{i}.mlp.up_proj.weight": torch.randn(3500, 3500,
                                                                       generator=gen)
                   for i in range(3)}, str(d / "model.safetensors"))
        (d / "config.json").write_text(json.dumps(cfg))
        paths.append(d)
    return paths


@pytest.mark.slow
def test_sigkill_during_a_merge_leaves_a_temporary_that_the_next_merge_removes(
        tmp_path: Path) -> None:
    base, a, b = _big_family(tmp_path / "models")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "merge_method": "ties", "base_model": str(base),
        "models": [{"model": str(m), "parameters": {"weight": 1.0, "density": 0.5}}
                   for m in (a, b)]}))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "evomerge", "merge", str(recipe), "-o",
                             str(out), "-q"], stderr=subprocess.PIPE)
    wait_until(lambda: list(tmp_path.glob(".out.partial-*")), step=0.005)
    proc.kill()
    proc.wait()
    stale = list(tmp_path.glob(".out.partial-*"))
    assert len(stale) == 1 and not out.exists()
    # a temporary of a live process and a user's look-alike directory are left alone
    live = tmp_path / f".out.partial-{stale[0].name.split('-')[1]}-{os.getpid()}-aaaa"
    live.mkdir()
    (live / ".evomerge").write_text(json.dumps({"written_by": "evomerge", "kind": "model"}))
    users = tmp_path / ".out.partial-mine"
    users.mkdir()
    done = subprocess.run([sys.executable, "-m", "evomerge", "merge", str(recipe), "-o",
                           str(out), "-q"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not stale[0].exists() and live.exists() and users.exists()
    assert sorted(p.name for p in tmp_path.glob(".out.*")) == sorted([live.name, users.name])


@pytest.mark.slow
def test_sigterm_during_a_merge_removes_its_temporary(tmp_path: Path) -> None:
    base, a, b = _big_family(tmp_path / "models")
    recipe = recipe_file(tmp_path / "r.yaml", base, a, b)
    proc = subprocess.Popen([sys.executable, "-m", "evomerge", "merge", str(recipe), "-o",
                             str(tmp_path / "out"), "-q"], stderr=subprocess.PIPE, text=True)
    wait_until(lambda: list(tmp_path.glob(".out.partial-*")), step=0.005)
    proc.terminate()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "interrupted; nothing was written" in err, err
    assert not list(tmp_path.glob(".out*")) and not (tmp_path / "out").exists()


# == 11. one line instead of a traceback =====================================================
def test_text_files_that_are_not_utf8_and_bad_yaml(
        llama: list[Path], tiny_zoo: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    latin = tmp_path / "r.yaml"
    latin.write_bytes(f"merge_method: linear\n# caf\xe9\nmodels: [{{model: {llama[1]}}}]\n"
                      .encode("latin-1"))
    code, err = run_cli(["merge", str(latin), "-o", str(tmp_path / "o")], capsys)
    assert_one_line(code, err, "not UTF-8", "line 2")
    broken = tmp_path / "c.yaml"
    broken.write_text("base_model: x\nmodels: [a, b\ntasks: []\n")
    code, err = run_cli(["evolve", str(broken)], capsys)
    assert_one_line(code, err, "not valid YAML", "line")
    task = tmp_path / "t.jsonl"
    task.write_bytes('{"prompt": "caf\xe9", "answer": "1"}\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        from evomerge.eval.tasks import load_task

        load_task(task)


@pytest.mark.parametrize("content, needle", [
    ('{"prompt": "a", "answer": "1"}\n42\n', "expected a JSON object"),
    ('{"prompt": "q", "choices": ["a", "b"], "answer": 5}\n', "answer index 5"),
    ('{"prompt": "q", "choices": ["a", "b"], "answer": "c"}\n', "not one of its choices"),
    ('{"question": "q", "answer": "1"}\n', "prompt_field"),
])
def test_bad_task_records_are_one_line(tmp_path: Path, content: str, needle: str) -> None:
    from evomerge.eval.tasks import load_task

    path = tmp_path / "t.jsonl"
    path.write_text(content)
    with pytest.raises(ConfigError, match=needle):
        load_task(path)


@pytest.mark.parametrize("extra, needle", [
    (["--device", "foo"], "'foo' is not a device"),
    (["--shard-size", "1e400"], "invalid size"),
    (["--shard-size", "-5MB"], "invalid size"),
])
def test_bad_command_line_values_are_one_line(
        llama: list[Path], tmp_path: Path, extra: list[str], needle: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    recipe = recipe_file(tmp_path / "r.yaml", *llama)
    code, err = run_cli(["merge", str(recipe), "-o", str(tmp_path / "o"), *extra], capsys)
    assert_one_line(code, err, needle)
    assert not (tmp_path / "o").exists()


def test_recipe_directory_missing_config_and_remote_code(
        llama: list[Path], tiny_zoo: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["merge", str(tmp_path), "-o", str(tmp_path / "o")], capsys)
    assert_one_line(code, err, "is a directory")
    bare = copy_model(llama[0], tmp_path / "bare_base")
    (bare / "config.json").unlink()
    recipe = recipe_file(tmp_path / "r.yaml", bare, llama[1])
    code, err = run_cli(["merge", str(recipe), "-o", str(tmp_path / "o")], capsys)
    assert_one_line(code, err, "no config.json")
    assert not (tmp_path / "o").exists()
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo)
    cfg_json = json.loads((zoo / "base" / "config.json").read_text())
    cfg_json.update(model_type="custom_arch_xyz", auto_map={
        "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"})
    (zoo / "base" / "config.json").write_text(json.dumps(cfg_json))
    with pytest.raises(ModelError, match="trust_remote_code|cannot load"):
        evolve(load_config(evolve_config(zoo, tmp_path / "run")))
    assert not (tmp_path / "run").exists()


def test_read_only_output_location_is_one_line(
        llama: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = recipe_file(tmp_path / "r.yaml", *llama)
    with tmpfs(tmp_path / "ro", "100m", readonly=True) as ro:
        code, err = run_cli(["merge", str(recipe), "-o", str(ro / "out")], capsys)
        assert_one_line(code, err, "read-only")
        assert list(ro.iterdir()) == []


def test_a_full_disk_is_found_before_work_and_during_it(
        llama: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    recipe = recipe_file(tmp_path / "r.yaml", *llama)
    size = sum(f.stat().st_size for f in llama[0].iterdir())
    with tmpfs(tmp_path / "small", f"{max(64, size // 4096)}k") as small:
        code, err = run_cli(["merge", str(recipe), "-o", str(small / "out")], capsys)
        assert_one_line(code, err, "not enough space")
        assert list(small.iterdir()) == []
        # the check passes (free space misread) but the disk fills while writing
        import evomerge.io.writer as writer

        monkeypatch.setattr(writer, "ensure_space", lambda *a, **k: None)
        code, err = run_cli(["merge", str(recipe), "-o", str(small / "out")], capsys)
        assert_one_line(code, err, "disk is full")
        assert list(small.iterdir()) == []


def test_np_merge_checks_its_output_before_training(
        tiny_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "np.yaml"
    with tmpfs(tmp_path / "ro", "100m", readonly=True) as ro:
        cfg.write_text(yaml.safe_dump({
            "models": [str(tiny_zoo / "math_en"), str(tiny_zoo / "lang_it")],
            "data": {"zoo": "add_it", "split": "search", "limit": 8}, "steps": 100000,
            "output": str(ro / "merged")}))
        start = time.perf_counter()
        code, err = run_cli(["np-merge", str(cfg), "-q"], capsys)
        assert_one_line(code, err, "read-only")
        assert time.perf_counter() - start < 60  # 100000 steps were never started


# == 12. evaluation memory is bounded ========================================================
def test_a_prompt_beyond_the_context_is_one_line_or_truncated(tiny_zoo: Path,
                                                               tmp_path: Path) -> None:
    from evomerge.zoo.data import task_items

    items = task_items("add_it", "search")[:30]
    rows = [{"id": it.id, "prompt": it.prompt, "answer": it.answer} for it in items]
    rows[3]["prompt"] = " ".join(["uno"] * 2500) + " " + rows[3]["prompt"]
    for split in ("search", "test"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = {"name": "long", "search": str(tmp_path / "search.jsonl"),
            "test": str(tmp_path / "test.jsonl")}
    cfg = evolve_config(tiny_zoo, tmp_path / "run", tasks=[task],
                        fitness={"subset_size": 10, "estimator": "mean"},
                        optimizer={"name": "random", "pop_size": 2, "generations": 1})
    with pytest.raises(ConfigError, match=f"item '{rows[3]['id']}'.*context of 32"):
        evolve(load_config(cfg))
    task["options"] = {"truncate": "left"}
    cfg["run_dir"] = str(tmp_path / "run2")
    assert evolve(load_config(cfg)).evaluations > 0


def test_batches_are_bounded_by_tokens_and_give_the_same_answers(llama: list[Path]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.eval.evaluator import Evaluator
    from evomerge.eval.tasks import Item, Task

    model = AutoModelForCausalLM.from_pretrained(llama[1])
    tok = AutoTokenizer.from_pretrained(llama[1])
    rng = np.random.default_rng(0)
    items = tuple(Item(id=str(i), prompt=" ".join(rng.choice(list("0123456789"), n)),
                       answer=str(i % 10))
                  for i, n in enumerate([3, 5, 50, 4, 6, 45, 2, 7]))
    task = Task("t", items, max_new_tokens=3)
    small = Evaluator(model, tok, batch_size=64, max_batch_tokens=300)
    widths = [len(small._prompt_ids(task, it)) + 3 for it in items]
    chunks = small._chunks(widths)
    assert [e - s for s, e in chunks] != [len(items)]
    assert all(max(widths[s:e]) * (e - s) <= 300 or e - s == 1 for s, e in chunks)
    one = Evaluator(model, tok, batch_size=1)
    for method in ("generate", "teacher_forced"):
        a, b = small(task, method=method), one(task, method=method)
        assert a.correct.tolist() == b.correct.tolist() and a.outputs == b.outputs
