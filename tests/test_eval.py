"""Tasks, answer extraction and the per-item evaluator on real tiny models."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from evomerge.errors import ConfigError
from evomerge.eval import Evaluator, Item, Task, evaluate, load_task
from evomerge.eval.extract import get_rule, matches


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, object, Task]:
    """A tiny word-level Llama trained for a few seconds on 'what is seven ?' -> '7': it gets
    some items right and some wrong, which is what agreement tests need."""
    from transformers import LlamaForCausalLM

    from evomerge.zoo.data import task_items
    from evomerge.zoo.train import batches_from, cycle_items, model_config, train, word_tokenizer

    torch.manual_seed(0)
    tok = word_tokenizer()
    model = LlamaForCausalLM(model_config(len(tok), hidden=32, layers=2))
    items = [it for t in ("num_en", "num_it", "max_en") for s in ("train", "search", "test")
             for it in task_items(t, s)]
    train(model, tok, batches_from(cycle_items(items[:200], random.Random(0)), 32), 60, 3e-3,
          log=lambda s: None)
    task = Task(name="numbers", items=tuple(Item(it.id, it.prompt, it.answer, meta=it.meta)
                                            for it in items[:120]), stop=("\n",))
    return model, tok, task


def test_teacher_forcing_agrees_with_greedy_generation(trained) -> None:  # noqa: ANN001
    model, tok, task = trained
    fast = evaluate(model, tok, task, method="teacher_forced")
    slow = evaluate(model, tok, task, method="generate")
    assert 0.05 < slow.accuracy < 0.95, slow.accuracy  # a mix of right and wrong
    assert fast.ids == slow.ids
    np.testing.assert_array_equal(fast.correct, slow.correct)


def test_batch_size_does_not_change_results(trained) -> None:  # noqa: ANN001
    model, tok, task = trained
    one = evaluate(model, tok, task, batch_size=1, method="generate")
    many = evaluate(model, tok, task, batch_size=16, method="generate")
    assert one.outputs == many.outputs
    np.testing.assert_array_equal(one.correct, many.correct)
    tf_one = evaluate(model, tok, task, batch_size=1, method="teacher_forced")
    np.testing.assert_array_equal(tf_one.correct, many.correct)


def test_subset_follows_requested_ids_and_evaluator_is_reusable(trained) -> None:  # noqa: ANN001
    model, tok, task = trained
    ev = Evaluator(model, tok, batch_size=8)
    full = ev(task)
    ids = [task.ids[5], task.ids[0], task.ids[17]]
    sub = ev(task, ids)
    assert sub.ids == ids
    expected = full.as_dict()
    assert sub.correct.tolist() == [expected[i] for i in ids]
    with pytest.raises(ConfigError, match="has no item"):
        ev(task, ["nope"])


def test_multiple_choice_matches_hand_computed_loglikelihood(trained) -> None:  # noqa: ANN001
    model, tok, _ = trained
    items = (Item("a", "what is seven ?", "7", choices=("3", "7", "12")),
             Item("b", "what is twelve ?", "12", choices=("12", "20")))
    task = Task(name="mc", items=items, kind="multiple_choice")
    result = evaluate(model, tok, task)
    for item, correct, chosen in zip(items, result.correct, result.outputs, strict=True):
        scores = []
        for choice in item.choices:
            ctx = tok(item.prompt)["input_ids"]
            cont = tok(choice, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = model(torch.tensor([ctx + cont])).logits[0]
            lp = torch.log_softmax(logits, -1)
            scores.append(sum(lp[len(ctx) - 1 + k, t].item() for k, t in enumerate(cont)))
        best = item.choices[int(np.argmax(scores))]
        assert chosen == best and correct == (best == item.answer)


def test_loaders_jsonl_csv_and_datasets_dir(tmp_path: Path) -> None:
    records = [{"id": "q1", "prompt": "2+2=", "answer": "4", "lang": "en"},
               {"id": "q2", "prompt": "3+3=", "answer": "6", "lang": "it"}]
    jl = tmp_path / "t.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in records))
    task = load_task(jl, extract="last_number")
    assert task.ids == ["q1", "q2"] and task.kind == "generate"
    assert task.items[1].meta == {"lang": "it"} and task.extract == "last_number"
    assert task.where(lang="it").ids == ["q2"]
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("id,prompt,answer,choices\nm1,Sky is,blue,red|blue\nm2,Grass is,0,"
                        "green|pink\n")
    mc = load_task(csv_path)
    assert mc.kind == "multiple_choice" and mc.items[0].gold == 1 and mc.items[1].answer == "green"
    import datasets

    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "ds"))
    assert load_task(tmp_path / "ds").ids == ["q1", "q2"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "prompt": "x"}\n')
    with pytest.raises(ConfigError, match="has no field 'answer'"):
        load_task(bad)
    dup = tmp_path / "dup.jsonl"
    dup.write_text("\n".join(json.dumps({**records[0]}) for _ in range(2)))
    with pytest.raises(ConfigError, match="appears twice"):
        load_task(dup)


@pytest.mark.parametrize("rule, text, reference, ok", [
    ("last_number", "so 3 + 4 = 7.", "7", True),
    ("last_number", "the answer is 1,234", "1234", True),
    ("last_number", "no idea", "7", False),
    ("first_number", "12 apples and 3 pears", "12", True),
    ("exact", "  Paris ", "Paris", True),
    ("choice_letter", "The answer is (B).", "B", True),
])
def test_extraction_rules(rule: str, text: str, reference: str, ok: bool) -> None:
    assert matches(get_rule(rule)(text, None), reference, rule) is ok


def test_regex_rule_and_language_detector() -> None:
    assert get_rule("regex")("#### 42 done", r"#### (\d+)") == "42"
    from evomerge.eval.evaluator import detect_language

    assert detect_language("questa è una frase scritta in italiano") == "it"
    assert detect_language("dies ist ein Satz auf Deutsch geschrieben") == "de"
    assert detect_language("this sentence is written in English") == "en"


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_choice_scores_equal_one_unpadded_row_per_choice(llama: list[Path],
                                                                attn: str) -> None:
    """All choices of an item in one row (a custom 4-D mask) give each choice the
    log-likelihood a forward pass of prompt + choice alone gives it; multi-token choices of
    different lengths, prompts of different lengths in one batch."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(llama[1], attn_implementation=attn).eval()
    tok = AutoTokenizer.from_pretrained(llama[1])
    items = (Item("a", "1 + 2 =", "3", choices=("3", "12", "301")),
             Item("b", "10 + 20 + 30 =", "60", choices=("60", "6")),
             Item("c", "9 =", "9", choices=("9",  "99", "909", "9009")))
    task = Task("mc", items, kind="multiple_choice")
    ev = Evaluator(model, tok, batch_size=8)
    conts = [[ev._continuation_ids(task, it, c) for c in it.choices] for it in items]
    ctxs = [ev._prompt_ids(task, it, 4) for it in items]
    assert any(len(c) > 2 for cs in conts for c in cs)
    expected = []
    for ctx, cs in zip(ctxs, conts, strict=True):
        row = []
        for c in cs:
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([ctx + c])).logits[0].float(), -1)
            row.append(sum(lp[len(ctx) - 1 + k, t].item() for k, t in enumerate(c)))
        expected.append(row)
    with torch.no_grad():
        packed = ev._choice_scores_packed(ctxs, conts)
        rows = ev._choice_scores_rows(ctxs, conts)
    np.testing.assert_allclose(np.concatenate(packed), np.concatenate(expected), atol=1e-4)
    np.testing.assert_allclose(np.concatenate(rows), np.concatenate(expected), atol=1e-4)
    assert ev._packed_ok()
    assert (ev(task).outputs == Evaluator(model, tok, packed=False)(task).outputs)


def test_out_of_device_memory_halves_the_batch_and_keeps_the_answers(trained) -> None:  # noqa: ANN001
    """A device that runs out of memory above 3 rows per forward pass (raised as CUDA would:
    no CUDA here): the evaluator halves its batch until it fits, with the same answers as a
    batch size that fits from the start; one that fails even one row at a time is one line."""
    from evomerge.errors import EvomergeError

    model, tok, task = trained
    expected = evaluate(model, tok, task, batch_size=2, method="generate")

    def oom_above(limit: int):  # noqa: ANN202
        def hook(_module: object, args: tuple, kwargs: dict) -> None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is not None and ids.shape[0] > limit:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return model.register_forward_pre_hook(hook, with_kwargs=True)

    handle = oom_above(3)
    try:
        ev = Evaluator(model, tok, batch_size=16)
        got = ev(task, method="generate")
    finally:
        handle.remove()
    assert got.outputs == expected.outputs
    assert ev.batch_size == 2 and ev.notes == [
        "out of device memory: batch size lowered to 8",
        "out of device memory: batch size lowered to 4",
        "out of device memory: batch size lowered to 2"]
    handle = oom_above(0)
    try:
        with pytest.raises(EvomergeError, match="runs out of device memory even one item"):
            Evaluator(model, tok, batch_size=4)(task, method="generate")
    finally:
        handle.remove()


def test_auto_batch_size_fills_the_free_memory() -> None:
    from evomerge.memory import MemoryPlan, auto_batch_size

    at_one = MemoryPlan("cpu", {"host": {"runtime": 500, "live model": 1000, "evaluation": 100}})
    assert auto_batch_size(at_one, 10_000) == (9_000 - 1_500) // 100  # 75
    assert auto_batch_size(at_one, 10**9) == 256  # capped
    assert auto_batch_size(at_one, 1_000) == 1  # never below one
    assert auto_batch_size(at_one, None) == 64  # free memory unknown
    on_gpu = MemoryPlan("cuda", {"device": {"live model": 2000, "evaluation": 300},
                                 "host": {"runtime": 10**9}})
    assert auto_batch_size(on_gpu, 20_000) == (18_000 - 2_000) // 300



def test_scoring_computes_the_head_for_answer_positions_only(families, monkeypatch) -> None:  # noqa: ANN001
    """Multiple choice and the teacher-forced path run the vocabulary-wide head on the last
    positions only (the answers'), not on every prompt position: on a GPU, copying every
    position's log-probabilities to the host cost more than the forward pass."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = families["llama"][1]
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    widths: list[int] = []
    handle = model.get_output_embeddings().register_forward_hook(
        lambda _m, args, _out: widths.append(args[0].shape[1]))
    rng = random.Random(0)
    prompts = ["".join(rng.choice("abcdefgh ") for _ in range(rng.randint(20, 40)))
               for _ in range(12)]
    mc = Task("mc", tuple(Item(str(i), p, "ab", choices=("ab", "c", "def"))
                          for i, p in enumerate(prompts)), kind="multiple_choice")
    exact = Task("ex", tuple(Item(str(i), p, "abc") for i, p in enumerate(prompts)))
    try:
        Evaluator(model, tok, batch_size=4)(mc)
        mc_widths, widths[:] = list(widths), []
        # the teacher-forced passes alone (items they leave unsettled would be generated)
        monkeypatch.setattr(Evaluator, "_generate", lambda self, t, its: (
            [False] * len(its), [""] * len(its)))
        Evaluator(model, tok, batch_size=4)(exact, method="teacher_forced")
    finally:
        handle.remove()
    # packed choices: 1 + 0 + 2 tokens after the prompt, plus the prompt's last position
    assert mc_widths == [4, 4, 4]
    assert widths == [4, 4, 4]  # 3 answer tokens, then the end (the check only generates)
