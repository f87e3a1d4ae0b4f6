"""Merging a chat fine-tune that added two special tokens with its base and a sibling: rows
aligned by token string, mergekit's fills, a tokenizer that loads and encodes as the merge
assumed, and mergekit's own results where mergekit handles the case."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from evomerge.zoo.tiny import CHAT_TEMPLATE, make_chat_finetune, make_family

from .helpers import load_model_tensors, run_evomerge, run_mergekit
from .test_cli import run_cli, write_recipe

ADDED = ("<|im_start|>", "<|im_end|>")
VOCAB_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")


@pytest.fixture(scope="module")
def chat_family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vocab")
    base, sibling = make_family("llama", root, n_finetunes=1, seed=11)
    return {"base": base, "chat": make_chat_finetune(base, root / "chat", seed=5),
            "sibling": sibling}


def recipe(fam: dict[str, Path], method: str = "ties", **extra: Any) -> dict[str, Any]:
    density = {"density": 0.5} if method == "ties" else {}
    return {"merge_method": method, "base_model": str(fam["base"]), "dtype": "float32",
            "models": [{"model": str(fam["chat"]), "parameters": {"weight": 1.0, **density}},
                       {"model": str(fam["sibling"]), "parameters": {"weight": 0.5, **density}}],
            **extra}


def by_token(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """tensor -> token -> row, so two merges are compared by token, not by index."""
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(path).get_vocab()
    tensors = load_model_tensors(path)
    return {name: {tok: tensors[name][i] for tok, i in vocab.items()} for name in VOCAB_TENSORS}


def test_without_a_tokenizer_setting_the_error_says_how(chat_family: dict[str, Path],
                                                        tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    path = write_recipe(tmp_path / "r.yaml", recipe(chat_family))
    code, err = run_cli(["merge", str(path), "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and "tokenizer_source: union" in err and "[84, 32]" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("source", ["union", "base", "chat"])
def test_tokenizer_source_matches_mergekit(chat_family: dict[str, Path], tmp_path: Path,
                                           source: str) -> None:
    tok_source = str(chat_family["chat"]) if source == "chat" else source
    r = recipe(chat_family, tokenizer_source=tok_source)
    ours = run_evomerge(r, tmp_path / "ours")
    theirs = run_mergekit(r, tmp_path / "mergekit")
    rows = 82 if source == "base" else 84
    assert ours["model.embed_tokens.weight"].shape == (rows, 32)
    assert set(ours) == set(theirs)
    ours_rows, theirs_rows = by_token(tmp_path / "ours"), by_token(tmp_path / "mergekit")
    for name in VOCAB_TENSORS:
        assert ours_rows[name].keys() == theirs_rows[name].keys()
        for tok, row in theirs_rows[name].items():
            torch.testing.assert_close(ours_rows[name][tok], row, rtol=1e-5, atol=1e-6)
    for name in set(ours) - set(VOCAB_TENSORS):
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-6)


def test_union_output_loads_generates_and_encodes_the_added_tokens(
        chat_family: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    run_evomerge(recipe(chat_family, tokenizer_source="union", chat_template="auto"), out)
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == 84 == len(tok)
    assert tok.convert_tokens_to_ids(list(ADDED)) == [82, 83]
    assert tok.chat_template.strip() == CHAT_TEMPLATE.strip()  # auto: the one model with one
    ids = tok.apply_chat_template([{"role": "user", "content": "1+1"}],
                                  add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    expected = [82] + tok.convert_tokens_to_ids(list("user\n1+1")) + [83] + \
        tok.convert_tokens_to_ids(["\n"]) + [82] + tok.convert_tokens_to_ids(
            list("assistant\n"))
    assert list(ids) == expected
    # the added tokens are special: kept whole, dropped when decoding without specials
    assert tok("<|im_start|>ab", add_special_tokens=False).input_ids == [82] + \
        tok.convert_tokens_to_ids(["a", "b"])
    assert tok.decode([82, 5], skip_special_tokens=True) == tok.decode([5])
    generated = model.generate(torch.tensor([expected]), max_new_tokens=3, do_sample=False)
    assert generated.shape == (1, len(expected) + 3)


def test_added_token_rows_follow_mergekits_fill(chat_family: dict[str, Path],
                                               tmp_path: Path) -> None:
    """Task arithmetic by hand: a token only the chat model has takes the chat model's row in
    the base and the sibling too, so the merged row is the chat row; shared tokens merge as
    usual, row by row of the same token."""
    out = run_evomerge(recipe(chat_family, "task_arithmetic", tokenizer_source="union"),
                       tmp_path / "m")
    base, chat, sib = (load_model_tensors(chat_family[k]) for k in ("base", "chat", "sibling"))
    for name in VOCAB_TENSORS:
        merged = out[name]
        torch.testing.assert_close(merged[82:], chat[name][82:], rtol=0, atol=1e-7)
        expected = base[name] + 1.0 * (chat[name][:82] - base[name]) + 0.5 * (
            sib[name] - base[name])
        torch.testing.assert_close(merged[:82], expected, rtol=1e-6, atol=1e-6)


def test_tokenizer_block_tokens_and_padding_match_mergekit(chat_family: dict[str, Path],
                                                           tmp_path: Path) -> None:
    block = {"source": "union", "pad_to_multiple_of": 8, "tokens": {
        "<|im_start|>": {"source": {"kind": "zero"}, "force": True},
        "<|im_end|>": {"source": {"kind": "model_token", "model": str(chat_family["base"]),
                                  "token": "</s>"}},
        "<tool>": {"source": {"kind": "model_token", "model": str(chat_family["sibling"]),
                              "token_id": 5}},
    }}
    r = recipe(chat_family, "task_arithmetic", tokenizer=block)
    ours = run_evomerge(r, tmp_path / "ours")
    theirs = run_mergekit(r, tmp_path / "mergekit")
    assert ours["model.embed_tokens.weight"].shape == (88, 32)  # 85 tokens padded to 88
    emb = ours["model.embed_tokens.weight"]
    assert emb[82].abs().max() == 0  # forced zero
    # not forced: the chat model keeps its own row, base and sibling take the base's </s>,
    # so task arithmetic gives the chat row back
    chat = load_model_tensors(chat_family["chat"])["model.embed_tokens.weight"]
    torch.testing.assert_close(emb[83], chat[83])
    sibling = load_model_tensors(chat_family["sibling"])["model.embed_tokens.weight"]
    torch.testing.assert_close(emb[84], sibling[5])  # a new token from a row of the sibling
    for name in VOCAB_TENSORS:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-6)


def test_unknown_tokenizer_block_key_is_one_line(chat_family: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = write_recipe(tmp_path / "r.yaml", recipe(chat_family, tokenizer={
        "source": "union", "pad_to_multiple": 8}))
    code, err = run_cli(["merge", str(path), "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and "pad_to_multiple" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_search_over_models_with_different_vocabularies(tiny_zoo: Path,
                                                          tmp_path: Path) -> None:
    """evolve with tokenizer_source: union over the zoo's Italian expert and a chat
    fine-tune of its math expert that added two special tokens. The chat model scored inside
    the search (rows aligned, live model resized) equals the chat model evaluated on its own,
    and best/ and the best checkpoint re-evaluated equal what the report says."""
    import yaml

    import evomerge
    from evomerge.config import load_config
    from evomerge.eval.evaluator import Evaluator
    from evomerge.io.hf import load_causal_lm, load_tokenizer
    from evomerge.run.loop import evolve
    from evomerge.zoo.data import zoo_task

    from .test_evolve import config

    chat = make_chat_finetune(tiny_zoo / "math_en", tmp_path / "chat_math", seed=3,
                              delta_scale=0.0)
    cfg = config(tiny_zoo, tmp_path / "run", fitness={"subset_size": 20, "estimator": "mean"},
                 optimizer={"name": "ga", "pop_size": 4, "generations": 2},
                 tokenizer_source="union")
    cfg["models"] = [str(chat), str(tiny_zoo / "lang_it")]
    result = evolve(load_config(cfg))
    test = zoo_task("add_it", "test")
    alone = Evaluator(load_causal_lm(chat), load_tokenizer(chat), batch_size=64)(test)
    assert result.test["chat_math"]["add_it"] == alone.accuracy
    best = tmp_path / "run" / "best"
    assert yaml.safe_load((best / "mergekit_config.yml").read_text())[
        "tokenizer_source"] == "union"
    model, tok = load_causal_lm(best), load_tokenizer(best)
    assert model.config.vocab_size == len(tok)
    assert Evaluator(model, tok, batch_size=64)(test).accuracy == result.test["best"]["add_it"]
    # a tested candidate (it references both models), merged on disk as the search merged it
    cand = next(c for c in result.final if c["role"] == "candidate" and c["test"])
    recipe = {**cand["recipe"], "tokenizer_source": "union"}
    merged = evomerge.merge(recipe, tmp_path / "candidate")
    model, tok = load_causal_lm(merged), load_tokenizer(merged)
    assert tok.convert_tokens_to_ids(list(ADDED)) == [len(tok) - 2, len(tok) - 1]
    assert model.config.vocab_size == len(tok) == len(load_tokenizer(tiny_zoo / "base")) + 2
    assert Evaluator(model, tok, batch_size=64)(test).accuracy == cand["test"]["add_it"]


def test_np_merge_over_different_vocabularies(tmp_path: Path) -> None:
    """np-merge with tokenizer_source: union over a chat fine-tune with two added tokens and
    the zoo's Italian expert: the sibling's rows for the added tokens are the chat model's
    (the only donor), so any learned interpolation keeps the chat rows exactly."""
    from evomerge.config import load_np_merge_config
    from evomerge.npmerge.job import np_merge
    from evomerge.zoo.manifest import ZOO_DIR

    from .test_npmerge import np_config

    chat = make_chat_finetune(ZOO_DIR / "math_en", tmp_path / "chat_math", seed=2)
    path = np_config(tmp_path, steps=4, tokenizer_source="union",
                     models=[str(chat), str(ZOO_DIR / "lang_it")])
    result = np_merge(load_np_merge_config(path))
    merged = load_model_tensors(result.output)
    chat_rows = load_model_tensors(chat)
    from transformers import AutoTokenizer

    n = len(AutoTokenizer.from_pretrained(ZOO_DIR / "base"))
    names = [k for k in merged if merged[k].shape[0] == n + 2]
    assert len(names) == 2  # embedding and head
    for name in names:
        torch.testing.assert_close(merged[name][n:].float(), chat_rows[name][n:].float(),
                                   rtol=1e-3, atol=1e-4)
        assert not torch.allclose(merged[name][:n].float(), chat_rows[name][:n].float())
    tok = AutoTokenizer.from_pretrained(result.output)
    assert tok.convert_tokens_to_ids(list(ADDED)) == [n, n + 1]
    assert set(result.test) == {"chat_math", "lang_it", "np-merge"}


def test_the_layer_stacking_space_refuses_a_vocabulary_merge(tiny_zoo: Path,
                                                             tmp_path: Path) -> None:
    from evomerge.config import load_config
    from evomerge.errors import ConfigError
    from evomerge.run.loop import evolve

    from .test_evolve import config

    cfg = config(tiny_zoo, tmp_path / "run", space={"type": "dis"}, tokenizer_source="union",
                 merge_method="passthrough")
    with pytest.raises(ConfigError, match="does not merge vocabularies"):
        evolve(load_config(cfg))
    assert not (tmp_path / "run").exists()


def test_union_keeps_the_chat_models_template_without_being_asked(
        chat_family: dict[str, Path], tmp_path: Path) -> None:
    """tokenizer_source: union without chat_template: the base has no template, the chat
    fine-tune has one; the output keeps it instead of silently dropping it."""
    from transformers import AutoTokenizer

    base_tok = AutoTokenizer.from_pretrained(chat_family["base"])
    assert not getattr(base_tok, "chat_template", None)
    out = tmp_path / "merged"
    run_evomerge(recipe(chat_family, tokenizer_source="union"), out)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template.strip() == CHAT_TEMPLATE.strip()
