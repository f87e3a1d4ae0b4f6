"""The final choice (issue 14): the top candidates by estimate, the input models and the
hand-set baselines are re-scored on the whole search split; the answer is the best there,
never worse than the best baseline, and the report shows them side by side. Numbers are
checked against an independent evaluation of each recipe with the Evaluator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evomerge.config import load_config
from evomerge.eval.evaluator import Evaluator
from evomerge.merge.disk import RECIPE_FILE
from evomerge.recipe import MergeRecipe, load_recipe
from evomerge.run.loop import evolve
from evomerge.zoo.data import zoo_task
from evomerge.zoo.manifest import ZOO_DIR

BASE, MODELS = str(ZOO_DIR / "base"), [str(ZOO_DIR / "math_en"), str(ZOO_DIR / "lang_it")]


def _config(run_dir: Path, **over: object) -> dict:
    cfg = {"base_model": BASE, "models": MODELS, "merge_method": "task_arithmetic",
           "space": {"type": "per_model", "weight": [0, 2]},
           "tasks": [{"name": "add_it", "zoo": "add_it"}],
           "fitness": {"subset_size": 20, "estimator": "mean", "calibration_merges": 0},
           "optimizer": {"name": "ga", "pop_size": 6, "generations": 3},
           "final": {"top_k": 4}, "seed": 0, "run_dir": str(run_dir)}
    cfg.update(over)
    return cfg


def _accuracy(recipe: dict, split: str) -> float:
    """The recipe merged in memory and evaluated on the whole split by the Evaluator."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.io.checkpoint import Checkpoint
    from evomerge.merge.planner import MergePlan

    r = MergeRecipe.model_validate(recipe)
    model = AutoModelForCausalLM.from_pretrained(BASE, dtype="float32")
    MergePlan.build(r, {m: Checkpoint(m) for m in r.referenced_models()}, seed=0
                    ).merge_into(model)
    return Evaluator(model.eval(), AutoTokenizer.from_pretrained(BASE))(
        zoo_task("add_it", split)).accuracy


@pytest.mark.slow
def test_the_answer_is_the_best_contender_on_the_whole_search_split(tmp_path: Path) -> None:
    result = evolve(load_config(_config(tmp_path / "run")))
    final = {row["label"]: row for row in result.final}
    roles = {row["role"] for row in result.final}
    assert roles == {"input", "baseline", "candidate"}
    assert {"base", "math_en", "lang_it", "task_arithmetic 1/1", "ties 0.5", "average",
            "slerp 0.5"} <= set(final)
    assert sum(row["role"] == "candidate" for row in result.final) == 4  # final.top_k
    chosen = [row for row in result.final if row["chosen"]]
    assert len(chosen) == 1 and chosen[0]["label"] == result.chosen
    score = chosen[0]["validation"]["add_it"]
    assert all(score >= row["validation"]["add_it"] for row in result.final)
    assert result.best_recipe == MergeRecipe.model_validate(chosen[0]["recipe"])
    # validation and test numbers are the recipes' real accuracies (independent evaluation)
    for label in ("ties 0.5", result.chosen):
        row = final[label]
        assert row["validation"]["add_it"] == pytest.approx(_accuracy(row["recipe"], "search"),
                                                            abs=1e-9)
        assert row["test"]["add_it"] == pytest.approx(_accuracy(row["recipe"], "test"),
                                                      abs=1e-9)
    assert result.test["best"] == chosen[0]["test"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Final choice" in report and "| ties 0.5 | baseline |" in report
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["chosen"] == result.chosen and len(saved["final"]) == len(result.final)
    # the input models' validation comes from their calibration-free evaluation, once each
    kinds = [json.loads(line)["kind"] for line in
             (tmp_path / "run" / "evaluations.jsonl").read_text().splitlines()]
    assert kinds.count("validation") == len(result.final)


@pytest.mark.slow
def test_when_no_candidate_beats_a_baseline_the_baseline_is_returned(tmp_path: Path) -> None:
    """A space that cannot leave the base (weights at most 0.05) evolves nothing useful: the
    run says so and returns the best baseline, also as its best/ checkpoint."""
    cfg = _config(tmp_path / "run", space={"type": "per_model", "weight": [0, 0.05]})
    result = evolve(load_config(cfg))
    chosen = next(row for row in result.final if row["chosen"])
    assert chosen["role"] in ("baseline", "input")
    best_baseline = max((r for r in result.final if r["role"] != "candidate"),
                        key=lambda r: r["validation"]["add_it"])
    assert chosen["label"] == best_baseline["label"]
    assert any("no evolved candidate beat" in n and chosen["label"] in n for n in result.notes)
    assert load_recipe(tmp_path / "run" / "best" / RECIPE_FILE) == result.best_recipe


def test_baselines_can_be_left_out(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "run", final={"top_k": 2, "baselines": False},
                  optimizer={"name": "random", "pop_size": 3, "generations": 1},
                  write_best=False)
    result = evolve(load_config(cfg))
    assert {row["role"] for row in result.final} == {"input", "candidate"}
