"""`evomerge report` names candidates by id with their recipes; `evomerge export` writes any
of them as the checkpoint the search merged and scored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from evomerge.config import load_config
from evomerge.run.loop import evolve

from .helpers import load_model_tensors
from .test_cli import run_cli
from .test_evolve import config


@pytest.fixture(scope="module")
def finished_run(tiny_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("export") / "run"
    evolve(load_config(config(tiny_zoo, run, fitness={"subset_size": 10, "estimator": "mean"},
                              optimizer={"name": "ga", "pop_size": 4, "generations": 2})))
    return run


@pytest.mark.slow
def test_export_best_equals_best_dir_and_candidates_score_as_recorded(
        finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from evomerge.eval.evaluator import Evaluator
    from evomerge.io.hf import load_causal_lm, load_tokenizer
    from evomerge.zoo.data import zoo_task

    code, err = run_cli(["export", str(finished_run), "best", "-o", str(tmp_path / "b")], capsys)
    assert code == 0, err
    ours, best = load_model_tensors(tmp_path / "b"), load_model_tensors(finished_run / "best")
    assert ours.keys() == best.keys() and all(ours[k].equal(best[k]) for k in ours)
    final = json.loads((finished_run / "result.json").read_text())["final"]
    tested = next(f for f in final if f["role"] == "candidate" and f["test"])
    number = tested["label"].split()[-1]
    code, err = run_cli(["export", str(finished_run), number, "-o", str(tmp_path / "c")], capsys)
    assert code == 0, err
    model, tok = load_causal_lm(tmp_path / "c"), load_tokenizer(tmp_path / "c")
    acc = Evaluator(model, tok, batch_size=64)(zoo_task("add_it", "test")).accuracy
    assert acc == pytest.approx(tested["test"]["add_it"], abs=1e-12)
    # a baseline by its label, and a candidate by "candidate N"
    code, _ = run_cli(["export", str(finished_run), "ties 0.5", "-o", str(tmp_path / "t")],
                      capsys)
    assert code == 0 and "ties" in (tmp_path / "t" / "mergekit_config.yml").read_text()
    code, _ = run_cli(["export", str(finished_run), f"candidate {number}", "-o",
                       str(tmp_path / "c2")], capsys)
    assert code == 0
    a, b = load_model_tensors(tmp_path / "c"), load_model_tensors(tmp_path / "c2")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("candidate, message", [
    ("99", "records candidates 0 to 7, not 99"),
    ("tiess 0.5", "no candidate 'tiess 0.5'"),
])
def test_export_mistakes_are_one_line(finished_run: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str], candidate: str,
                                      message: str) -> None:
    code, err = run_cli(["export", str(finished_run), candidate, "-o", str(tmp_path / "x")],
                        capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_report_lists_candidate_ids_with_recipes(finished_run: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from evomerge.cli import main
    from evomerge.run.report import summarize

    s = summarize(finished_run, top=3)
    assert [set(b) >= {"id", "recipe", "estimates"} for b in s["best"]] == [True] * 3
    with pytest.raises(SystemExit) as info:
        main(["report", str(finished_run), "--top", "3"])
        raise SystemExit(0)
    assert info.value.code in (0, None)
    out = capsys.readouterr().out
    for b in s["best"]:
        assert f"│ {b['id']} " in out or f"│  {b['id']} " in out or f" {b['id']} │" in out
    assert "merge_method: task_arithmetic" in out and "math_en" in out


GOLDEN_REPORT = Path(__file__).parent / "data" / "report_golden.md"


@pytest.mark.slow
def test_report_md_matches_the_golden_file(finished_run: Path) -> None:
    """report.md of a small search on the throwaway zoo: the final table with each
    contender's recipe, the test table, the best recipe (model paths masked)."""
    import os
    import re

    text = (finished_run / "report.md").read_text()
    text = re.sub(r"/\S*/(zoo|run)/", "<\\1>/", text)
    if os.environ.get("EVOMERGE_REGOLD"):
        GOLDEN_REPORT.write_text(text)
    assert text == GOLDEN_REPORT.read_text()
    assert "`{base_model: base, merge_method: task_arithmetic" in text
