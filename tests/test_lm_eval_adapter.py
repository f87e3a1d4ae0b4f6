"""The lm-eval adapter on offline tasks (local YAML over local JSON), compared with lm-eval's
own logged samples from its command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lm_eval")
pytestmark = pytest.mark.slow  # lm-eval itself runs the reference evaluations

os.environ["HF_DATASETS_OFFLINE"] = "1"


@pytest.fixture(scope="module")
def offline_tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from evomerge.zoo.data import task_items

    root = tmp_path_factory.mktemp("lmeval_tasks")
    items = task_items("num_en", "train") + task_items("max_en", "test")[:25]
    data = root / "numbers.jsonl"
    with data.open("w") as f:
        for it in items:
            choices = sorted({it.answer, str((int(it.answer) + 3) % 31),
                              str((int(it.answer) + 11) % 31)})
            f.write(json.dumps({"prompt": it.prompt, "answer": it.answer, "choices": choices,
                                "gold": choices.index(it.answer)}) + "\n")
    common = (f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
              "test_split: test\ndoc_to_text: '{{prompt}}'\n")
    (root / "mc.yaml").write_text(
        "task: evomerge_numbers_mc\n" + common + "output_type: multiple_choice\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{gold}}'\n"
        "metric_list:\n  - metric: acc\n")
    (root / "gen.yaml").write_text(
        "task: evomerge_numbers_gen\n" + common + "output_type: generate_until\n"
        "doc_to_target: '{{answer}}'\ntarget_delimiter: ' '\n"
        "generation_kwargs:\n  until: ['</s>']\n  max_gen_toks: 4\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n")
    return root


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny word-level model trained a few seconds (some answers right, some wrong)."""
    import random

    import torch
    from transformers import LlamaForCausalLM

    from evomerge.zoo.data import task_items
    from evomerge.zoo.train import batches_from, cycle_items, model_config, train, word_tokenizer

    torch.manual_seed(1)
    tok = word_tokenizer()
    model = LlamaForCausalLM(model_config(len(tok), hidden=32, layers=2))
    items = task_items("num_en", "train") + task_items("max_en", "train")[:60]
    train(model, tok, batches_from(cycle_items(items, random.Random(0)), 32), 60, 3e-3,
          log=lambda s: None)
    path = tmp_path_factory.mktemp("lmeval_model") / "model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def cli_samples(model: Path, task: str, include: Path, out: Path) -> dict[int, float]:
    """Per-doc metric from lm-eval's own command line with --log_samples."""
    metric = "acc" if task.endswith("mc") else "exact_match"
    subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                    f"pretrained={model},dtype=float32", "--tasks", task, "--include_path",
                    str(include), "--device", "cpu", "--batch_size", "8", "--log_samples",
                    "--output_path", str(out)], check=True, capture_output=True, timeout=300,
                   env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    files = list(out.rglob(f"samples_{task}_*.jsonl"))
    assert len(files) == 1, files
    rows = [json.loads(line) for line in files[0].read_text().splitlines()]
    return {r["doc_id"]: float(r[metric]) for r in rows}


@pytest.mark.parametrize("task", ["evomerge_numbers_mc", "evomerge_numbers_gen"])
def test_adapter_matches_lm_eval_logged_samples(task: str, offline_tasks: Path,
                                                saved_model: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.eval.lm_eval_adapter import LMEvalRunner

    model = AutoModelForCausalLM.from_pretrained(saved_model, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(saved_model)
    runner = LMEvalRunner(model, tok, batch_size=8, include_path=offline_tasks)
    ours = runner(task)
    theirs = cli_samples(saved_model, task, offline_tasks, tmp_path / "out")
    assert ours.ids == [str(i) for i in sorted(theirs)]
    expected = np.array([theirs[i] > 0.5 for i in sorted(theirs)])
    np.testing.assert_array_equal(ours.correct, expected)
    assert 0 < ours.correct.sum() < len(ours.correct)  # a mix, so the comparison has teeth
    # a subset of doc ids gives the same verdicts for those ids
    subset = [3, 0, 17, 30]
    sub = runner(task, subset)
    assert sub.ids == ["0", "3", "17", "30"]
    np.testing.assert_array_equal(sub.correct, [theirs[i] > 0.5 for i in (0, 3, 17, 30)])


def test_no_git_noise_outside_a_git_work_tree(offline_tasks: Path, saved_model: Path,
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capfd: pytest.CaptureFixture[str]) -> None:
    """lm-eval runs `git describe` for its results' git hash; outside a git work tree git
    printed "fatal: not a git repository" on the terminal once per candidate."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.eval.lm_eval_adapter import LMEvalRunner

    if shutil.which("git") is None:
        pytest.skip("no git here: nothing could print")
    monkeypatch.chdir(tmp_path)  # not a git work tree
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    model = AutoModelForCausalLM.from_pretrained(saved_model, dtype=torch.float32)
    runner = LMEvalRunner(model, AutoTokenizer.from_pretrained(saved_model), batch_size=8,
                          include_path=offline_tasks)
    capfd.readouterr()
    runner("evomerge_numbers_gen", [0, 1])
    captured = capfd.readouterr()
    assert "not a git repository" not in captured.err + captured.out
