"""Few-shot and chat-template prompts (issue 12, part 3): the exact token ids a model is fed,
checked against token lists written out by hand, not against the renderer's own output."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from evomerge.errors import ConfigError
from evomerge.eval.evaluator import Evaluator
from evomerge.eval.tasks import Item, Task

WORDS = ["uno", "due", "tre", "più", "?", "sei", "bravo", "3", "6", "quanto", "fa"]
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
ROLES = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> "
            "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")


def tokenizer(chat: bool = True) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + ROLES + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                       special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>",
                                   additional_special_tokens=ROLES)
    if chat:
        fast.chat_template = TEMPLATE
    return fast


def ids(tok: Any, tokens: list[str]) -> list[int]:
    out = tok.convert_tokens_to_ids(tokens)
    assert tok.unk_token_id not in out
    return out


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(SPECIALS + ROLES + WORDS), hidden_size=16,
                      intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0,
                      bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg).eval()


ITEM = Item("q1", "uno più due ?", "3")
SHOT = Item("s1", "tre più tre ?", "6")


def fed_ids(model: torch.nn.Module, evaluator: Evaluator, task: Task) -> list[list[int]]:
    """The input ids the model's forward pass actually received (padding removed)."""
    seen: list[list[int]] = []

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        x, mask = kwargs["input_ids"], kwargs["attention_mask"]
        seen.extend(row[m.bool()].tolist() for row, m in zip(x, mask, strict=True))

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    # the teacher-forced pass alone: no start-of-task check, no generation of the items it
    # leaves unsettled
    evaluator.check_items = 0
    evaluator._generate = lambda t, its: ([False] * len(its), [""] * len(its))  # type: ignore[method-assign]
    try:
        evaluator(task, method="teacher_forced")
    finally:
        handle.remove()
    return seen


def test_chat_prompt_with_system_and_a_multiturn_shot_feeds_these_exact_ids(
        model: torch.nn.Module) -> None:
    tok = tokenizer()
    task = Task("t", (ITEM,), chat=True, system="sei bravo", fewshot=1,
                fewshot_pool=(ITEM, SHOT))  # the item itself is never its own example
    prompt = ids(tok, ["<|system|>", "sei", "bravo", "<|end|>",
                       "<|user|>", "tre", "più", "tre", "?", "<|end|>",
                       "<|assistant|>", "6", "<|end|>",
                       "<|user|>", "uno", "più", "due", "?", "<|end|>", "<|assistant|>"])
    ev = Evaluator(model, tok)
    assert ev._prompt_ids(task, ITEM) == prompt  # no BOS added: the template owns it
    assert fed_ids(model, ev, task) == [prompt + ids(tok, ["3"])]


def test_plain_few_shot_prompt_feeds_these_exact_ids(model: torch.nn.Module) -> None:
    tok = tokenizer()
    pool = (SHOT, Item("s2", "due più uno ?", "3"), ITEM)
    task = Task("t", (ITEM,), fewshot=2, fewshot_pool=pool)
    ev = Evaluator(model, tok)
    got = ev._prompt_ids(task, ITEM)
    # two examples, whichever order the seeded draw gives them, then the question
    a = ["tre", "più", "tre", "?", "6"]
    b = ["due", "più", "uno", "?", "3"]
    q = ["uno", "più", "due", "?"]
    assert got in (ids(tok, ["<s>", *a, *b, *q]), ids(tok, ["<s>", *b, *a, *q]))
    assert fed_ids(model, ev, task) == [got + ids(tok, ["3"])]


def test_shots_are_seeded_per_item_and_never_the_item() -> None:
    from evomerge.eval.prompts import shots

    pool = tuple(Item(f"p{i}", f"prompt {i}", str(i)) for i in range(30))
    items = pool[:10]
    task = Task("t", items, fewshot=3, fewshot_pool=pool)
    first = {it.id: [s.id for s in shots(task, it)] for it in items}
    assert all(it.id not in first[it.id] for it in items)
    sub = task.subset(["p7", "p2"])  # another subset, another order: the same examples
    assert [s.id for s in shots(sub, sub.items[0])] == first["p7"]
    assert len({tuple(v) for v in first.values()}) > 5  # items get different draws
    reseeded = Task("t", items, fewshot=3, fewshot_pool=pool, fewshot_seed=1)
    assert [s.id for s in shots(reseeded, items[0])] != first["p0"] or \
        [s.id for s in shots(reseeded, items[1])] != first["p1"]


def test_multiple_choice_in_a_chat_scores_choices_as_the_assistants_answer(
        model: torch.nn.Module) -> None:
    tok = tokenizer()
    item = Item("m", "uno più due ?", "3", choices=("3", "6"))
    task = Task("t", (item,), kind="multiple_choice", chat=True)
    prompt = ids(tok, ["<|user|>", "uno", "più", "due", "?", "<|end|>", "<|assistant|>"])
    for packed, rows in ((False, [prompt + ids(tok, ["3"]), prompt + ids(tok, ["6"])]),
                         (True, [prompt])):  # one-token choices: read off the prompt's end
        seen: list[list[int]] = []
        handle = model.register_forward_pre_hook(
            lambda m, a, k, seen=seen: seen.extend(k["input_ids"].tolist()), with_kwargs=True)
        try:
            Evaluator(model, tok, packed=packed)(task)
        finally:
            handle.remove()
        assert [[t for t in r if t != tok.pad_token_id] for r in seen] == rows


def test_chat_without_a_template_and_bad_few_shot_settings_are_one_line(
        model: torch.nn.Module) -> None:
    ev = Evaluator(model, tokenizer(chat=False))
    with pytest.raises(ConfigError, match="no chat template"):
        ev(Task("t", (ITEM,), chat=True))
    with pytest.raises(ConfigError, match="fewshot 2 needs at least"):
        Task("t", (ITEM,), fewshot=2, fewshot_pool=(SHOT,))
    with pytest.raises(ConfigError, match="needs chat: true"):
        Task("t", (ITEM,), system="x")


def test_few_shot_options_from_a_config_reach_the_prompt(tmp_path: Any) -> None:
    import json

    from evomerge.config import load_config
    from evomerge.run.worker import load_task_pair
    from evomerge.zoo.manifest import ZOO_DIR

    rows = [{"question": f"q{i}", "solution": str(i)} for i in range(6)]
    for name, part in (("search", rows[:3]), ("test", rows[3:]), ("shots", rows)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    cfg = load_config({
        "base_model": str(ZOO_DIR / "base"), "models": [str(ZOO_DIR / "math_en")],
        "tasks": [{"name": "mine", "search": str(tmp_path / "search.jsonl"),
                   "test": str(tmp_path / "test.jsonl"),
                   "fewshot_from": str(tmp_path / "shots.jsonl"),
                   "options": {"prompt_field": "question", "answer_field": "solution",
                               "fewshot": 2, "fewshot_delimiter": " | "}}]})
    search, _ = load_task_pair(cfg.tasks[0])
    from evomerge.eval.prompts import render

    text, _ = render(search, search.items[0], None)
    parts = text.split(" | ")
    assert len(parts) == 3 and parts[-1] == "q0"
    assert all(p.split(" ")[0] != "q0" for p in parts[:2])  # never the item itself
    assert all(p == f"q{p[1:].split(' ')[0]} {p[1:].split(' ')[0]}" for p in parts[:2])


def test_chat_without_a_template_stops_a_search_before_any_work(tmp_path: Any) -> None:
    from evomerge.config import load_config
    from evomerge.run.loop import evolve
    from evomerge.zoo.manifest import ZOO_DIR

    cfg = load_config({
        "base_model": str(ZOO_DIR / "base"), "models": [str(ZOO_DIR / "math_en")],
        "tasks": [{"name": "t", "zoo": "add_it", "options": {"chat": True}}],
        "fitness": {"subset_size": 5, "estimator": "mean"},
        "run_dir": str(tmp_path / "run")})
    with pytest.raises(ConfigError, match="no chat template"):
        evolve(cfg)
    assert not (tmp_path / "run").exists()


def test_one_evaluator_renders_each_prompt_setting_anew(model: torch.nn.Module) -> None:
    """Prompts are cached per evaluator; a task of the same name and items but another
    few-shot pool, delimiter or chat setting gets its own prompt, not the cached one."""
    tok = tokenizer(chat=True)
    ev = Evaluator(model, tok)
    other = Item("s2", "due più uno ?", "3")
    tasks = [Task("t", (ITEM,), fewshot=1, fewshot_pool=(SHOT,)),
             Task("t", (ITEM,), fewshot=1, fewshot_pool=(other,)),
             Task("t", (ITEM,), fewshot=1, fewshot_pool=(SHOT,), fewshot_delimiter=" ? "),
             Task("t", (ITEM,), chat=True)]
    got = [ev._prompt_ids(t, ITEM) for t in tasks]
    fresh = [Evaluator(model, tok)._prompt_ids(t, ITEM) for t in tasks]
    assert got == fresh and len({tuple(g) for g in got}) == 4
    assert ev._prompt_ids(tasks[0], ITEM) == got[0]  # back to the first: from the cache
