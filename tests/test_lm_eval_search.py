"""lm-eval tasks inside `evomerge evolve` (issue 12, part 1), offline: local task YAML over
local JSONL. The per-item verdicts a run records for its best merge must equal what lm-eval's
own command line logs (--log_samples) for the written best/ checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from evomerge.config import EvolveConfig, load_config
from evomerge.errors import ConfigError
from evomerge.run.loop import evolve
from evomerge.zoo.manifest import ZOO_DIR

pytest.importorskip("lm_eval")
pytestmark = pytest.mark.slow  # whole searches through lm-eval

os.environ["HF_DATASETS_OFFLINE"] = "1"


def _write_jsonl(path: Path, items: list) -> None:
    with path.open("w") as f:
        for it in items:
            a = int(it.answer)
            choices = sorted({str(a), str(a + 1), str(max(0, a - 2))})
            f.write(json.dumps({"prompt": it.prompt, "answer": it.answer, "choices": choices,
                                "gold": choices.index(it.answer)}) + "\n")


MC = ("output_type: multiple_choice\ndoc_to_text: '{{prompt}}'\n"
      "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{gold}}'\n"
      "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")


@pytest.fixture(scope="module")
def lm_tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two multiple-choice tasks on the zoo's Italian additions: one with a single test split
    (80 docs), one with validation (30) and test (20) splits."""
    from evomerge.zoo.data import task_items

    root = tmp_path_factory.mktemp("lm_tasks")
    items = task_items("add_it", "search")
    _write_jsonl(root / "numbers.jsonl", items[:80])
    _write_jsonl(root / "val.jsonl", items[80:110])
    _write_jsonl(root / "test.jsonl", items[110:130])
    (root / "mc.yaml").write_text(
        "task: numbers_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {root / 'numbers.jsonl'}\ntest_split: test\n" + MC)
    (root / "two_splits.yaml").write_text(
        "task: numbers_two\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    validation: {root / 'val.jsonl'}\n    test: {root / 'test.jsonl'}\n"
        "validation_split: validation\ntest_split: test\n" + MC)
    return root


def run_config(lm_tasks: Path, run_dir: Path, **task: object) -> EvolveConfig:
    return load_config({
        "base_model": str(ZOO_DIR / "base"),
        "models": [str(ZOO_DIR / "math_en"), str(ZOO_DIR / "lang_it")],
        "merge_method": "task_arithmetic", "space": {"type": "per_model", "weight": [0, 2]},
        "tasks": [{"name": "mc", "lm_eval": str(lm_tasks / "mc.yaml"), "search_size": 40,
                   **task}],
        "fitness": {"subset_size": 10, "estimator": "gmpirt", "calibration_merges": 2,
                    "irt_kind": "2pl"},
        "optimizer": {"name": "ga", "pop_size": 4, "generations": 2},
        "run_dir": str(run_dir), "seed": 0})


@pytest.fixture(scope="module")
def lm_run(lm_tasks: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    run = tmp_path_factory.mktemp("lm_run") / "run"
    return run, evolve(run_config(lm_tasks, run))


def lm_eval_cli(model: Path, task_yaml: Path, out: Path) -> dict[int, float]:
    """Per-doc acc from lm-eval's own command line with --log_samples."""
    subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                    f"pretrained={model},dtype=float32", "--tasks", "numbers_mc",
                    "--include_path", str(task_yaml.parent), "--device", "cpu",
                    "--batch_size", "8", "--log_samples", "--output_path", str(out)],
                   check=True, capture_output=True, timeout=300,
                   env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    files = list(out.rglob("samples_numbers_mc_*.jsonl"))
    assert len(files) == 1, files
    return {r["doc_id"]: float(r["acc"])
            for r in map(json.loads, files[0].read_text().splitlines())}


def test_best_merge_verdicts_equal_lm_evals_own_logged_samples(
        lm_run: tuple[Path, object], lm_tasks: Path, tmp_path: Path) -> None:
    from evomerge.recipe import load_recipe

    run, result = lm_run
    splits = yaml.safe_load((run / "splits.yaml").read_text())["mc"]
    assert len(splits["search"]) == 40 and len(splits["test"]) == 40
    assert not set(splits["search"]) & set(splits["test"])
    assert sorted(map(int, splits["search"] + splits["test"])) == list(range(80))
    best = load_recipe(run / "best" / "mergekit_config.yml")
    assert best == result.best_recipe  # type: ignore[attr-defined]
    records = [json.loads(x) for x in (run / "evaluations.jsonl").read_text().splitlines()]
    tested = [r for r in records if r["kind"] == "test"
              and load_recipe(r["recipe"]) == best]
    assert len(tested) == 1
    ours = tested[0]["tasks"]["mc"]
    assert ours["ids"] == splits["test"]
    theirs = lm_eval_cli(run / "best", lm_tasks / "mc.yaml", tmp_path / "out")
    assert len(theirs) == 80
    expected = [int(theirs[int(i)] > 0.5) for i in ours["ids"]]
    assert ours["correct"] == expected
    assert 0 < sum(expected) < len(expected)  # a mix, so the comparison has teeth
    # the accuracy the run reports for best is lm-eval's acc on the test docs
    assert result.test["best"]["mc"] == pytest.approx(np.mean(expected))  # type: ignore[attr-defined]


def test_an_lm_eval_search_killed_with_sigkill_resumes_to_the_same_result(
        lm_run: tuple[Path, object], lm_tasks: Path, tmp_path: Path) -> None:
    import signal
    import time

    _, full = lm_run
    cfg = run_config(lm_tasks, tmp_path / "run")
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    proc = subprocess.Popen([sys.executable, "-m", "evomerge", "evolve", str(cfg_path), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    record = tmp_path / "run" / "evaluations.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (
            record.exists() and len(record.read_text().splitlines()) >= 7):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = record.read_bytes().count(b"\n")  # whole records (a torn one is dropped)
    assert 7 <= before < full.evaluations  # type: ignore[attr-defined]
    resumed = evolve(cfg, resume=True)
    assert resumed.new_evaluations == full.evaluations - before  # type: ignore[attr-defined]
    assert resumed.best_recipe == full.best_recipe  # type: ignore[attr-defined]
    assert resumed.test == full.test  # type: ignore[attr-defined]


def test_validation_docs_search_and_test_docs_test(lm_tasks: Path) -> None:
    from evomerge.eval.lm_eval_tasks import load_lm_eval_task

    task = load_lm_eval_task(str(lm_tasks / "two_splits.yaml"))
    assert task.search_ids == list(range(30)) and task.test_ids == list(range(20))
    assert [it.prompt for it in task.items("search")][:1] != [it.prompt for it in
                                                              task.items("test")][:1]
    small = load_lm_eval_task(str(lm_tasks / "two_splits.yaml"), search_size=10, test_size=5,
                              split_seed=3)
    again = load_lm_eval_task(str(lm_tasks / "two_splits.yaml"), search_size=10, test_size=5,
                              split_seed=3)
    assert len(small.search_ids) == 10 and len(small.test_ids) == 5
    assert small.search_ids == again.search_ids and small.test_ids == again.test_ids
    one = load_lm_eval_task(str(lm_tasks / "mc.yaml"), search_size=30, test_size=20)
    assert len(one.search_ids) == 30 and len(one.test_ids) == 20
    assert not set(one.search_ids) & set(one.test_ids)
    assert one.metric == "acc" and one.higher_is_better
    norm = load_lm_eval_task(str(lm_tasks / "mc.yaml"), metric="acc_norm")
    assert norm.metric == "acc_norm"


@pytest.mark.parametrize("task, needle", [
    ({"lm_eval": "no_such_task_xyz", "include_path": "HERE"}, "unknown lm-eval task"),
    ({"metric": "bleu"}, "has no metric 'bleu'"),
    ({"search_size": 80}, "leaves no test documents"),
    ({"options": {"stop": "x"}}, "options apply to file tasks"),
])
def test_lm_eval_task_mistakes_are_one_line_before_any_work(
        lm_tasks: Path, tmp_path: Path, task: dict, needle: str) -> None:
    if task.get("include_path") == "HERE":
        task["include_path"] = str(lm_tasks)
    with pytest.raises(ConfigError, match=needle):
        evolve(run_config(lm_tasks, tmp_path / "run", **task))
    assert not (tmp_path / "run").exists()


def test_a_task_yaml_found_relative_to_the_config(lm_tasks: Path, tmp_path: Path) -> None:
    project = tmp_path / "proj"
    shutil.copytree(lm_tasks, project / "tasks")
    text = (project / "tasks" / "mc.yaml").read_text().replace(str(lm_tasks), str(
        project / "tasks"))
    (project / "tasks" / "mc.yaml").write_text(text)
    cfg_file = project / "search.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "base_model": str(ZOO_DIR / "base"), "models": [str(ZOO_DIR / "math_en")],
        "tasks": [{"name": "mc", "lm_eval": "tasks/mc.yaml"}], "run_dir": "runs/x"}))
    cfg = load_config(cfg_file)
    assert cfg.tasks[0].lm_eval == str(project / "tasks" / "mc.yaml")


def test_the_example_task_loads_from_the_repository_root(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    from evomerge.run.worker import load_task_pair

    root = Path(__file__).parents[1]
    monkeypatch.chdir(root)  # where the example's data_files are found, as it says
    cfg = load_config(root / "examples" / "evolve_lm_eval.yaml")
    search, test = load_task_pair(cfg.tasks[0])
    assert len(search.items) == 60 and len(test.items) == 60
    assert not set(search.ids) & set(test.ids)


def test_np_merge_learns_from_an_lm_eval_tasks_documents(lm_tasks: Path, tmp_path: Path
                                                         ) -> None:
    from evomerge.config import load_np_merge_config
    from evomerge.npmerge.job import load_data, np_merge

    (lm_tasks / "gen.yaml").write_text(
        "task: numbers_gen\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {lm_tasks / 'numbers.jsonl'}\ntest_split: test\n"
        "output_type: generate_until\ndoc_to_text: '{{prompt}}'\n"
        "doc_to_target: '{{answer}}'\ngeneration_kwargs:\n  until: ['</s>']\n"
        "metric_list:\n  - metric: exact_match\n")
    cfg = load_np_merge_config({
        "models": [str(ZOO_DIR / "math_en"), str(ZOO_DIR / "lang_it")],
        "data": {"lm_eval": str(lm_tasks / "gen.yaml"), "split": "search"},
        "steps": 2, "batch_size": 8, "output": str(tmp_path / "np")})
    data = load_data(cfg.data, "data")
    rows = [json.loads(x) for x in (lm_tasks / "numbers.jsonl").read_text().splitlines()]
    assert len(data.items) == 40
    assert all(it.prompt == rows[int(it.id)]["prompt"] and it.answer == rows[int(it.id)]
               ["answer"] for it in data.items)
    result = np_merge(cfg)
    assert len(result.losses) == 2 and (tmp_path / "np" / "config.json").exists()
    mc = cfg.data.model_copy(update={"lm_eval": str(lm_tasks / "mc.yaml")})
    with pytest.raises(ConfigError, match="not generative"):
        load_data(mc, "data")
