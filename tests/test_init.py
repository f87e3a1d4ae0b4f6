"""`evomerge init`: a commented config for the user's models that loads and runs; mistakes are
one line with exit 2 and nothing written; an existing file is never overwritten."""

from __future__ import annotations

from pathlib import Path

import pytest

from evomerge.config import load_config
from evomerge.zoo.manifest import ZOO_DIR

from .test_cli import run_cli


def test_init_writes_a_config_that_loads_and_names_the_inputs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "s.jsonl").write_text('{"id": "1", "prompt": "1+1=", "answer": "2"}\n')
    (tmp_path / "t.jsonl").write_text('{"id": "2", "prompt": "2+2=", "answer": "4"}\n')
    out = tmp_path / "cfg" / "evolve.yaml"
    code, err = run_cli(["init", "--base", str(ZOO_DIR / "base"), "--model",
                         str(ZOO_DIR / "math_en"), "--model", str(ZOO_DIR / "lang_it"),
                         "--task", "add_it", "--task",
                         f"mine={tmp_path / 's.jsonl'},{tmp_path / 't.jsonl'}", "-o", str(out)],
                        capsys)
    assert code == 0, err
    cfg = load_config(out)
    assert cfg.base_model == str(ZOO_DIR / "base")
    assert cfg.models == [str(ZOO_DIR / "math_en"), str(ZOO_DIR / "lang_it")]
    assert [t.name for t in cfg.tasks] == ["add_it", "mine"] and cfg.tasks[0].zoo == "add_it"
    assert cfg.tasks[1].search == str(tmp_path / "s.jsonl")
    assert cfg.run_dir.endswith("runs/evolve") and cfg.optimizer.name == "ga"
    text = out.read_text()
    assert text.count("#") >= 15  # every setting explained
    before = text
    code, err = run_cli(["init", "--base", str(ZOO_DIR / "base"), "--model",
                         str(ZOO_DIR / "math_en"), "--task", "add_it", "-o", str(out)], capsys)
    assert code == 2 and "exists" in err and out.read_text() == before


@pytest.mark.parametrize("args, message", [
    (["--model", "no/such/model", "--task", "add_it"], "is not a directory"),
    (["--model", str(ZOO_DIR / "math_en"), "--task", "mine=only_search.jsonl"],
     "NAME=SEARCH_FILE,TEST_FILE"),
    (["--model", str(ZOO_DIR / "math_en"), "--task", "mine=a.jsonl,b.jsonl"], "does not exist"),
])
def test_init_mistakes_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    args: list[str], message: str) -> None:
    out = tmp_path / "e.yaml"
    code, err = run_cli(["init", "--base", str(ZOO_DIR / "base"), *args, "-o", str(out)],
                        capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
def test_the_written_config_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from evomerge.run.loop import evolve

    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["init", "--base", str(ZOO_DIR / "base"), "--model",
                         str(ZOO_DIR / "math_en"), "--model", str(ZOO_DIR / "lang_it"),
                         "--task", "add_it"], capsys)
    assert code == 0, err
    cfg = load_config(tmp_path / "evolve.yaml")
    cfg = cfg.model_copy(update={"optimizer": cfg.optimizer.model_copy(
        update={"generations": 2})})
    result = evolve(cfg)
    assert (tmp_path / "runs" / "evolve" / "best" / "model.safetensors").exists()
    assert (tmp_path / "runs" / "evolve" / "report.md").exists() and "best" in result.test


@pytest.mark.parametrize("record, options", [
    ({"prompt": "1+1=", "completion": " 2"}, {"answer_field": "completion"}),
    ({"question": "1+1?", "answer": "2", "idx": 3},
     {"prompt_field": "question", "id_field": "idx"}),
    ({"instruction": "add", "output": "2", "options": ["1", "2"]},
     {"prompt_field": "instruction", "answer_field": "output", "choices_field": "options"}),
    ({"id": "a", "prompt": "1+1=", "answer": "2"}, None),
])
def test_init_maps_the_task_files_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         record: dict, options: dict | None) -> None:
    """The first record says which field is the prompt and which the answer: the common
    prompt/completion format works without hand-written options, and the task loads."""
    import json

    from evomerge.eval.sources import load_task_pair

    for name in ("s", "t"):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps(record) + "\n")
    out = tmp_path / "e.yaml"
    code, err = run_cli(["init", "--base", str(ZOO_DIR / "base"), "--model",
                         str(ZOO_DIR / "math_en"), "--task",
                         f"mine={tmp_path / 's.jsonl'},{tmp_path / 't.jsonl'}", "-o", str(out)],
                        capsys)
    assert code == 0, err
    task = load_config(out).tasks[0]
    assert (task.options or None) == options
    search, _ = load_task_pair(task)
    assert search.items[0].answer == str(record.get("completion", record.get(
        "answer", record.get("output"))))


def test_init_names_the_fields_it_cannot_map(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("s", "t"):
        (tmp_path / f"{name}.jsonl").write_text('{"q": "1+1", "a": "2"}\n')
    out = tmp_path / "e.yaml"
    code, err = run_cli(["init", "--base", str(ZOO_DIR / "base"), "--model",
                         str(ZOO_DIR / "math_en"), "--task",
                         f"mine={tmp_path / 's.jsonl'},{tmp_path / 't.jsonl'}", "-o", str(out)],
                        capsys)
    assert code == 2 and "its fields: q, a" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
