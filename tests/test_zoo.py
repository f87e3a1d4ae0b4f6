"""The generated benchmarks and the zoo build machinery (a throwaway tiny build)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from evomerge.errors import ModelError
from evomerge.zoo.data import LANGS, TEMPLATES, base_corpus, split_pairs, task_items, vocabulary
from evomerge.zoo.manifest import verify, zoo_models


@pytest.mark.parametrize("task", list(TEMPLATES))
def test_splits_share_no_items_and_are_stable(task: str) -> None:
    splits = {s: task_items(task, s) for s in ("train", "search", "test")}
    ids = [set(it.id for it in items) for items in splits.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert [it.id for it in task_items(task, "test")] == [it.id for it in splits["test"]]
    # the same operand pairs in every language of a skill: test items never leak via another
    # language's training split
    skill = task.split("_")[0]
    other = f"{skill}_{'it' if task.endswith('en') else 'en'}"
    assert split_pairs(task)["test"] == split_pairs(other)["test"]


def test_items_are_correct_and_answers_single_words() -> None:
    from num2words import num2words

    for it in task_items("add_de", "test")[:20]:
        _, a, b = it.id.split("-")
        assert it.answer == str(int(a) + int(b))
        assert num2words(int(a), lang="de") in it.prompt
    vocab = set(vocabulary())
    for task in TEMPLATES:
        for it in task_items(task, "train"):
            assert set(it.prompt.split()) <= vocab and it.answer in vocab


def test_word_tokenizer_round_trips_through_auto_tokenizer(tmp_path: Path) -> None:
    import random

    from transformers import AutoTokenizer

    from evomerge.zoo.train import word_tokenizer

    tok = word_tokenizer()
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    gen = base_corpus(random.Random(0), LANGS, LANGS, ("num_en",))
    for _ in range(50):
        prompt, answer = next(gen)
        ids = again(prompt + " " + answer)["input_ids"]
        assert ids == tok(prompt + " " + answer)["input_ids"]
        assert again.unk_token_id not in ids
        assert again.decode(ids, skip_special_tokens=True) == prompt + " " + answer


def test_tiny_zoo_build_is_deterministic_loadable_and_checksummed(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from evomerge.zoo.build import ZOO_RECIPE, build_zoo

    recipe = copy.deepcopy(ZOO_RECIPE)
    recipe["model"] = {"hidden": 32, "layers": 2}
    recipe["base"].update(steps=6, batch=16, warmup=2)
    recipe["expert_training"].update(steps=3, batch=8)
    recipe["experts"] = {"math_en": ["add_en"], "lang_it": ["num_it"]}
    a = build_zoo(tmp_path / "a", recipe, log=lambda s: None)
    b = build_zoo(tmp_path / "b", recipe, log=lambda s: None)
    assert list(a) == ["base", "math_en", "lang_it"] == list(zoo_models(tmp_path / "a"))
    for name in a:
        ma = AutoModelForCausalLM.from_pretrained(a[name])
        mb = AutoModelForCausalLM.from_pretrained(b[name])
        assert all(torch.equal(x, y) for x, y in zip(ma.state_dict().values(),
                                                      mb.state_dict().values(), strict=True))
        assert next(ma.parameters()).dtype == torch.float16
    manifest = verify(tmp_path / "a")
    assert manifest["recipe"] == recipe
    # experts retrained on the kept base: the same zoo as a full build
    c = build_zoo(tmp_path / "c", recipe, log=lambda s: None, base_from=tmp_path / "a")
    assert verify(tmp_path / "c")["files"] == manifest["files"]
    other = copy.deepcopy(recipe)
    other["base"]["steps"] += 1
    with pytest.raises(ModelError, match="different base"):
        build_zoo(tmp_path / "d", other, log=lambda s: None, base_from=tmp_path / "a")
    assert not (tmp_path / "d").exists() and list(c) == list(a)
    weights = a["math_en"] / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match its checksum"):
        verify(tmp_path / "a")
    assert not list(tmp_path.glob(".*partial"))
