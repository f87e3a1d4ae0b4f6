"""The teacher-forced fast path gives generation's verdict item by item, whatever the
tokenizer and whitespace convention: answers written with and without their leading space,
delimiters "" and " ", byte-level BPE, SentencePiece-style and word-level vocabularies."""

from __future__ import annotations

import numpy as np
import pytest

from evomerge.eval import Evaluator, Item, Task

from .helpers import record_calls
from .kobari import KINDS, TRAINED, records, trained


@pytest.fixture(scope="module", params=KINDS)
def world(request: pytest.FixtureRequest):  # noqa: ANN201
    return trained(request.param)


def task(space: bool, delimiter: str) -> Task:
    items = tuple(Item(r["id"], r["prompt"], r["completion"]) for r in records(space))
    return Task(name="sounds", items=items, target_delimiter=delimiter, max_new_tokens=8)


@pytest.mark.parametrize("space", [True, False], ids=["leading-space", "bare"])
@pytest.mark.parametrize("delimiter", [" ", ""], ids=["delim-space", "delim-empty"])
def test_default_path_equals_generation(world, space: bool, delimiter: str,  # noqa: ANN001
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    model, tok = world
    t = task(space, delimiter)
    slow = Evaluator(model, tok, batch_size=8)(t, method="generate")
    fast_ev = Evaluator(model, tok, batch_size=8)
    calls = record_calls(monkeypatch, Evaluator, "_generate")
    fast = fast_ev(t)  # the default: the teacher-forced fast path for exact match
    if space:  # answers written " hiss": the forward pass settles every item itself
        assert [len(c[2]) for c in calls] == [fast_ev.check_items]
    assert fast.ids == slow.ids
    np.testing.assert_array_equal(fast.correct, slow.correct)
    assert fast_ev.notes == []  # the start-of-task check found no disagreement
    # the trained creatures are answered, the others mostly not: a real mix
    assert slow.correct[:TRAINED].mean() >= 0.8, slow.outputs[:TRAINED]
    assert slow.correct[TRAINED:].mean() <= 0.6


def test_forced_reference_departs_yet_verdict_holds(world) -> None:  # noqa: ANN001
    """Prompts that end in a space (never seen in training): the guessed reference is not
    what the model writes, and the verdicts are still generation's (what the forward pass
    cannot settle is generated)."""
    model, tok = world
    t = task(True, "")
    odd = Task(name="sounds-odd", items=tuple(Item(i.id, i.prompt + " ", i.answer)
                                              for i in t.items), max_new_tokens=8)
    slow = Evaluator(model, tok)(odd, method="generate")
    fast = Evaluator(model, tok)(odd, method="teacher_forced")
    np.testing.assert_array_equal(fast.correct, slow.correct)


def test_disagreement_switches_the_task_to_generation(world, monkeypatch) -> None:  # noqa: ANN001
    """If the fast path ever disagrees on the check items, the task is generated, said once."""
    import evomerge.eval.evaluator as ev

    model, tok = world
    t = task(True, " ")
    monkeypatch.setattr(ev, "_verdict", lambda *a: (False, ""))  # a broken fast path
    e = Evaluator(model, tok, batch_size=8)
    first, again = e(t), e(t)
    slow = Evaluator(model, tok, batch_size=8)(t, method="generate")
    np.testing.assert_array_equal(first.correct, slow.correct)
    np.testing.assert_array_equal(again.correct, slow.correct)
    assert len(e.notes) == 1 and "scored by generation" in e.notes[0]


def test_token_caches_key_on_the_delimiter(world) -> None:  # noqa: ANN001
    """One evaluator, one file loaded twice with different delimiters (same task name and
    item ids): each load is scored with its own tokens."""
    model, tok = world
    e = Evaluator(model, tok)
    for delimiter in (" ", "", " "):
        t = task(False, delimiter)
        np.testing.assert_array_equal(
            e(t, method="teacher_forced").correct,
            Evaluator(model, tok)(t, method="generate").correct)
