"""docs/config.md is generated from the config models; it must match the code."""

from __future__ import annotations

from pathlib import Path

from evomerge.config import EvolveConfig, NPMergeConfig
from evomerge.config_reference import render

DOC = Path(__file__).resolve().parent.parent / "docs" / "config.md"


def test_docs_config_md_is_up_to_date() -> None:
    assert DOC.read_text() == render(), (
        "docs/config.md is stale: python -m evomerge.config_reference > docs/config.md")


def test_every_field_is_in_the_reference_with_its_default() -> None:
    text = render()
    for model in (EvolveConfig, NPMergeConfig):
        for name in model.model_fields:
            assert f"| `{name}` |" in text, name
    assert ("| `batch_size` | int \\| `auto` | `64` | evaluation items per forward pass; auto: "
            "the largest the memory plan fits") in text
    assert "| `dtype` | `float32` \\| `bfloat16` \\| `float16` | `float32` |" in text


def test_every_row_has_a_meaning_of_its_own() -> None:
    """No empty meaning, and a comment block above a group of fields is not run into the
    first field's own comment."""
    from evomerge.config_reference import comments

    empty = [line for line in render().splitlines()
             if line.startswith("| `") and line.rstrip().endswith("|  |")]
    assert empty == []

    class Group:
        # lm-eval tasks: a block about the next three fields
        lm_eval: str | None = None  # its own meaning
        metric: str | None = None
        # a block for one field without a comment of its own
        seed: int = 0

    assert comments(Group) == {"lm_eval": "its own meaning", "metric": "",
                               "seed": "a block for one field without a comment of its own"}
