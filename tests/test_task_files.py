"""Users' own task files through the documented mapping (issue 12, part 2): any field names,
Jinja templates, a saved `datasets` directory with several splits, Parquet; mistakes are
one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from evomerge.cli import main
from evomerge.errors import ConfigError
from evomerge.eval.tasks import load_task
from evomerge.zoo.manifest import ZOO_DIR


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    return int(info.value.code or 0), capsys.readouterr().err


def write_question_solution(tmp_path: Path) -> tuple[Path, Path]:
    from evomerge.zoo.data import task_items

    paths = []
    for split in ("search", "test"):
        path = tmp_path / f"{split}.jsonl"
        path.write_text("".join(
            json.dumps({"uid": f"{split}-{i}", "question": it.prompt, "solution": it.answer},
                       ensure_ascii=False) + "\n"
            for i, it in enumerate(task_items("add_it", split)[:40])))
        paths.append(path)
    return paths[0], paths[1]


def search_config(tmp_path: Path, task: dict) -> Path:
    cfg = {"base_model": str(ZOO_DIR / "base"),
           "models": [str(ZOO_DIR / "math_en"), str(ZOO_DIR / "lang_it")],
           "space": {"type": "per_model", "weight": [0, 2]}, "tasks": [task],
           "fitness": {"subset_size": 10, "estimator": "mean"},
           "optimizer": {"name": "random", "pop_size": 2, "generations": 1},
           "run_dir": str(tmp_path / "run"), "write_best": False}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("options", [
    {"id_field": "uid", "prompt_field": "question", "answer_field": "solution"},
    {"id_field": "uid", "prompt_template": "{{ question }}", "answer_template": "{{solution}}"},
])
def test_a_question_solution_jsonl_runs_a_search_through_the_mapping(
        tmp_path: Path, options: dict, capsys: pytest.CaptureFixture[str]) -> None:
    search, test = write_question_solution(tmp_path)
    cfg = search_config(tmp_path, {"name": "mine", "search": str(search), "test": str(test),
                                   "options": options})
    code, err = run_cli(["evolve", str(cfg), "-q"], capsys)
    assert code == 0, err
    records = [json.loads(x) for x in (tmp_path / "run" / "evaluations.jsonl")
               .read_text().splitlines()]
    search_ids = {f"search-{i}" for i in range(40)}
    cands = [r for r in records if r["kind"] == "candidate"]
    assert cands and all(set(r["tasks"]["mine"]["ids"]) <= search_ids for r in cands)
    tests = [r for r in records if r["kind"] == "test"]
    assert all(r["tasks"]["mine"]["ids"] == [f"test-{i}" for i in range(40)] for r in tests)
    # the zoo's own task on the same items gives the same verdicts (same prompts, answers)
    from evomerge.zoo.data import task_items

    split = yaml.safe_load((tmp_path / "run" / "splits.yaml").read_text())["mine"]
    assert split["test"] == [f"test-{i}" for i in range(40)]
    base = next(r for r in tests if r["recipe"]["models"][0]["model"].endswith("base"))
    from evomerge.eval.evaluator import Evaluator
    from evomerge.io.hf import load_causal_lm, load_tokenizer
    from evomerge.zoo.data import zoo_task

    ev = Evaluator(load_causal_lm(ZOO_DIR / "base"), load_tokenizer(ZOO_DIR / "base"))
    zoo = zoo_task("add_it", "test")
    ids = [it.id for it in task_items("add_it", "test")[:40]]
    assert base["tasks"]["mine"]["correct"] == ev(zoo, ids).correct.astype(int).tolist()


def test_a_datasets_directory_with_splits_and_templates(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = {"train": [{"q": "uno più uno", "a": 2}, {"q": "due più due", "a": 4}],
            "validation": [{"q": "tre più tre", "a": 6}]}
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in rows.items()}
                         ).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(ConfigError, match="holds the splits train, validation; choose one"):
        load_task(tmp_path / "ds", prompt_field="q", answer_field="a")
    task = load_task(tmp_path / "ds", split="train", prompt_template="quanto fa {{q}} ?",
                     answer_template="{{a}}")
    assert [(it.id, it.prompt, it.answer) for it in task.items] == [
        ("0", "quanto fa uno più uno ?", "2"), ("1", "quanto fa due più due ?", "4")]
    with pytest.raises(ConfigError, match="template failed"):
        load_task(tmp_path / "ds", split="validation", prompt_template="{{question}}",
                  answer_template="{{a}}")


def test_a_parquet_file(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"prompt": "p1", "answer": "a1", "lang": "it"},
                                         {"prompt": "p2", "answer": "a2", "lang": "en"}]),
                   tmp_path / "t.parquet")
    task = load_task(tmp_path / "t.parquet")
    assert [(it.prompt, it.answer, it.meta) for it in task.items] == [
        ("p1", "a1", {"lang": "it"}), ("p2", "a2", {"lang": "en"})]


def test_an_unknown_task_option_is_one_line_with_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    search, test = write_question_solution(tmp_path)
    cfg = search_config(tmp_path, {"name": "mine", "search": str(search), "test": str(test),
                                   "options": {"prompt_feild": "question"}})
    code, err = run_cli(["evolve", str(cfg), "-q"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "unknown option 'prompt_feild'" in err and "did you mean 'prompt_field'" in err
    assert not (tmp_path / "run").exists()
    cfg = search_config(tmp_path, {"name": "mine", "search": str(search), "test": str(test)})
    code, err = run_cli(["evolve", str(cfg), "-q"], capsys)
    assert code == 2 and "has no field 'prompt'" in err and "question, solution" in err


def test_search_and_test_splits_of_one_datasets_directory(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    from evomerge.config import load_config
    from evomerge.run.worker import load_task_pair

    rows = {"validation": [{"question": f"v{i}", "answers": [str(i), "x"]} for i in range(3)],
            "test": [{"question": f"t{i}", "answers": [str(i)]} for i in range(2)]}
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in rows.items()}
                         ).save_to_disk(str(tmp_path / "ds"))
    cfg = load_config({"base_model": str(ZOO_DIR / "base"), "models": [str(ZOO_DIR / "math_en")],
                       "tasks": [{"name": "d", "search": str(tmp_path / "ds"),
                                  "test": str(tmp_path / "ds"), "options": {
                                      "search_split": "validation", "test_split": "test",
                                      "prompt_template": "Q: {{question}} A:",
                                      "answer_template": "{{answers[0]}}"}}]})
    search, test = load_task_pair(cfg.tasks[0])
    assert [(it.prompt, it.answer) for it in search.items] == [
        ("Q: v0 A:", "0"), ("Q: v1 A:", "1"), ("Q: v2 A:", "2")]
    assert [(it.prompt, it.answer) for it in test.items] == [("Q: t0 A:", "0"),
                                                             ("Q: t1 A:", "1")]


def test_hub_datasets_by_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``hf:OWNER/NAME`` goes to datasets.load_dataset with the configuration and split
    (the Hub itself cannot be reached here, so its answer is a local Dataset), and the usual
    field mapping applies; offline or unknown names are one line."""
    import datasets

    from evomerge.errors import ConfigError
    from evomerge.eval.tasks import load_task

    calls = []

    def fake(name: str, config: str | None = None, split: str | None = None) -> object:
        calls.append((name, config, split))
        return datasets.Dataset.from_list([{"question": "2+2?", "solution": "4"},
                                           {"question": "3+3?", "solution": "6"}])

    with monkeypatch.context() as m:
        m.setattr(datasets, "load_dataset", fake)
        task = load_task("hf:openai/gsm8k", dataset_config="main", split="test",
                         prompt_template="Q: {{question}}\nA:", answer_field="solution")
    assert calls == [("openai/gsm8k", "main", "test")]
    assert [(it.prompt, it.answer) for it in task.items] == [("Q: 2+2?\nA:", "4"),
                                                            ("Q: 3+3?\nA:", "6")]
    assert task.name == "gsm8k"
    with pytest.raises(ConfigError, match="choose its split with the option split"):
        load_task("hf:openai/gsm8k")
    # the real library, offline: one line that says what to do
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ConfigError) as info:
        load_task("hf:nobody/no-such-dataset", split="train")
    message = str(info.value)
    assert "\n" not in message and "could not load split 'train'" in message
    assert "save_to_disk" in message
