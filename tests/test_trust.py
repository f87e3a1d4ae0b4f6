"""Scores a user can trust, on a task format that is not evomerge's own (prompt/completion
JSONL, completions written with their leading space, a byte-level BPE tokenizer): the
generation path, the default fast path, a search's input rows and `evomerge eval` give the
same score; a task that cannot be right is said before the search; `evomerge eval` end to
end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from evomerge.cli import main
from evomerge.config import load_config
from evomerge.eval import Evaluator, load_task
from evomerge.io.hf import load_causal_lm, load_tokenizer
from evomerge.run.loop import evolve

from .kobari import write_family

TASK = {"name": "sounds", "search": "search.jsonl", "test": "test.jsonl",
        "options": {"answer_field": "completion"}}


@pytest.fixture(scope="module")
def kobari(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kobari")
    paths = write_family(root)
    (root / "tasks.yaml").write_text(yaml.safe_dump([TASK]), encoding="utf-8")
    return paths


def config(root: Path, run: str, **task_options: object) -> dict:
    task = {**TASK, "options": {**TASK["options"], **task_options}}
    return {"base_model": "base", "models": ["expert", "other"],
            "merge_method": "task_arithmetic", "space": {"type": "per_model",
                                                          "weight": [0, 2]},
            "tasks": [task], "optimizer": {"name": "ga", "pop_size": 4, "generations": 1},
            "fitness": {"subset_size": 10}, "run_dir": str(root / run)}


def write_config(root: Path, name: str, data: dict) -> Path:
    path = root / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


@pytest.mark.slow
def test_leading_space_scores_agree_everywhere(kobari: dict[str, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    root = kobari["base"].parent
    test = load_task(kobari["test"], answer_field="completion")
    assert test.items[0].answer.startswith(" ")  # the common format: " hiss"
    model, tok = load_causal_lm(kobari["expert"]), load_tokenizer(kobari["expert"])
    generated = Evaluator(model, tok)(test, method="generate")
    default = Evaluator(model, tok)(test)
    np.testing.assert_array_equal(default.correct, generated.correct)
    assert 0.4 < generated.accuracy < 1.0  # right on what it learnt, not on the rest

    result = evolve(load_config(write_config(root, "e.yaml", config(root, "run"))))
    row = next(r for r in result.final if r["label"] == "expert")
    assert row["test"]["sounds"] == pytest.approx(generated.accuracy)
    assert row["test_noise"]["sounds"]["n"] == len(test.items)
    assert not any("scores 0 %" in n for n in result.notes)  # no false alarm: pre-check

    out = root / "scores.json"
    code, _, err = run_cli(["eval", str(kobari["expert"]), str(kobari["base"]), "--tasks",
                            str(root / "tasks.yaml"), "--json", str(out)], capsys)
    assert code == 0, err
    scores = json.loads(out.read_text())
    expert = scores["models"][0]["tasks"]["sounds"]
    assert expert["accuracy"] == pytest.approx(generated.accuracy)
    assert expert["correct"] == dict(zip(generated.ids, generated.correct.astype(int).tolist(),
                                         strict=True))
    assert expert["n"] == 20 and expert["right"] == int(generated.correct.sum())
    lo, hi = expert["interval"]
    assert lo < expert["accuracy"] < hi
    base = scores["models"][1]["tasks"]["sounds"]
    cmp = scores["comparisons"][0]
    assert (cmp["model"], cmp["against"]) == ("base", "expert")
    wins = sum(1 for i, c in base["correct"].items() if c and not expert["correct"][i])
    assert cmp["wins"] == wins and cmp["items"] == 20
    # the run's own config works as a tasks file too; a second run refuses to overwrite
    code, _, err = run_cli(["eval", str(kobari["expert"]), "--tasks",
                            str(root / "run" / "config.yaml"), "--json", str(out)], capsys)
    assert code == 2 and "exists" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_answers_that_cannot_be_right_are_said_before_the_search(
        kobari: dict[str, Path]) -> None:
    """A stop string that cuts every answer (" " before " hiss") scores every model 0 %:
    one warning, before the search, naming the causes and the command to look."""
    root = kobari["base"].parent
    logged: list[str] = []
    cfg = load_config(write_config(root, "bad.yaml", config(root, "bad", stop=[" "])))
    result = evolve(cfg, log=logged.append)
    warnings = [line for line in logged if line.startswith("warning:")]
    assert len(warnings) == 1 and "every input model, base included, scores 0 %" in warnings[0]
    assert "evomerge eval" in warnings[0] and "stop strings" in warnings[0]
    assert warnings[0].removeprefix("warning: ") in result.notes
    report = (root / "bad" / "report.md").read_text()
    assert "scores 0 %" in report
    checks = [json.loads(line) for line in (root / "bad" / "evaluations.jsonl").open()
              if '"kind":"check"' in line]
    assert len(checks) == 3 and all(len(c["tasks"]["sounds"]["ids"]) == 20 for c in checks)


def test_eval_user_mistakes_are_one_line(kobari: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    tasks = str(kobari["base"].parent / "tasks.yaml")
    bad_tasks = tmp_path / "bad.yaml"
    bad_tasks.write_text("- {name: x, search: nowhere.jsonl, test: nowhere.jsonl}\n")
    for args in (["eval", str(tmp_path / "missing"), "--tasks", tasks],
                 ["eval", str(kobari["base"]), "--tasks", str(bad_tasks)],
                 ["eval", str(kobari["base"]), "--tasks", tasks, "--split", "train"],
                 ["eval", str(kobari["base"]), "--tasks", str(kobari["search"])]):
        code, _, err = run_cli(args, capsys)
        assert code == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_np_merge_says_when_the_merge_is_below_its_inputs(kobari: dict[str, Path]) -> None:
    """np-merge's test step: a merge below its best input (here the untrained base stands in
    for a bad merge) is a note with the paired comparison, never silent."""
    from types import SimpleNamespace

    import torch

    from evomerge.npmerge.job import _test

    test = load_task(kobari["test"], answer_field="completion")
    tok = load_tokenizer(kobari["expert"])
    notes: list[str] = []
    cfg = SimpleNamespace(models=[str(kobari["expert"]), str(kobari["other"])])
    scores = _test(cfg, test, tok, load_causal_lm(kobari["base"]), torch.device("cpu"),
                   load_causal_lm, notes)
    assert scores["np-merge"] == 0.0 and scores["expert"] > 0.4
    best = max(("expert", "other"), key=lambda k: scores[k])
    assert len(notes) == 1 and f"below input {best}" in notes[0] and "McNemar" in notes[0]
    assert "a real loss" in notes[0]
    notes.clear()
    _test(cfg, test, tok, load_causal_lm(kobari[best]), torch.device("cpu"), load_causal_lm,
          notes)
    assert notes == []  # as good as the best input: nothing to say


def test_pre_search_warnings_by_rule() -> None:
    """Each rule against hand-made scores, and the demo's cross-lingual case (inputs near 0
    by design) raises nothing."""
    from evomerge.run.precheck import input_warnings

    demo = {"base": {"add_it": 0.0}, "math_en": {"add_it": 0.0}, "lang_it": {"add_it": 0.05}}
    assert input_warnings(demo, ["add_it"], 20) == []
    zero = {"base": {"a": 0.0, "b": 0.0}, "m1": {"a": 0.0, "b": 0.0}}
    (w,) = input_warnings(zero, ["a", "b"], 20)
    assert w.startswith("every input model, base included, scores 0 % on the first 20")
    one_task = {"base": {"a": 0.0, "b": 0.3}, "m1": {"a": 0.0, "b": 0.6}}
    (w,) = input_warnings(one_task, ["a", "b"], 20)
    assert w.startswith("task 'a': every input model scores 0 %")
    silent = {"base": {"a": 0.1}, "m1": {"a": 0.5}, "broken": {"a": 0.0}}
    (w,) = input_warnings(silent, ["a"], 20)
    assert w.startswith("model 'broken' scores 0 % on the first 20 search items of every task")
    named = {"base": {"math_add": 0.3}, "math_expert": {"math_add": 0.2},
             "other": {"math_add": 0.5}}
    (w,) = input_warnings(named, ["math_add"], 20)
    assert w.startswith("model 'math_expert' is named like task 'math_add' but scores 20 %")
