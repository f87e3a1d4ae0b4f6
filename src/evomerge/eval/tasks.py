"""Tasks: lists of items with stable ids, loaded from JSONL, CSV or local HF datasets.

Everything downstream of a merge works on per-item correctness, so a task is just its items
plus how to judge them: generative (greedy decoding, stop strings, answer extraction) or
multiple choice (log-likelihood of each choice).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from evomerge.errors import ConfigError
from evomerge.io.text import read_text

TaskKind = Literal["generate", "multiple_choice"]


@dataclass(frozen=True)
class Item:
    """One benchmark item. For multiple choice, ``answer`` is the correct choice's text."""

    id: str
    prompt: str
    answer: str
    choices: tuple[str, ...] | None = None
    meta: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def gold(self) -> int:
        """Index of the correct choice (multiple choice only)."""
        assert self.choices is not None
        return self.choices.index(self.answer)


@dataclass(frozen=True)
class Task:
    """Items plus how to judge them.

    ``extract`` names the answer-extraction rule for generative tasks (see ``extract.py``);
    ``language`` (ISO 639-1) makes an answer in another language count as wrong.
    """

    name: str
    items: tuple[Item, ...]
    kind: TaskKind = "generate"
    max_new_tokens: int = 16
    stop: tuple[str, ...] = ("\n",)
    extract: str = "exact"
    regex: str | None = None
    language: str | None = None
    target_delimiter: str = " "
    # a prompt longer than the model's context: "error" (one line naming the item) or
    # "left" (keep its last tokens, as lm-eval does)
    truncate: Literal["error", "left"] = "error"

    def __post_init__(self) -> None:
        self._check_options()
        ids = [it.id for it in self.items]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ConfigError(f"task {self.name!r}: item id {dup!r} appears twice")
        if self.kind == "multiple_choice":
            for it in self.items:
                if not it.choices or it.answer not in it.choices:
                    raise ConfigError(f"task {self.name!r}: item {it.id!r} needs choices that "
                                      "contain its answer")

    def _check_options(self) -> None:
        """Every option's type and value, so a mistake stops before any evaluation."""
        import re

        from evomerge.eval.extract import get_rule

        where = f"task {self.name!r}"
        if self.kind not in ("generate", "multiple_choice"):
            raise ConfigError(f"{where}: kind {self.kind!r} is not generate or multiple_choice")
        if (not isinstance(self.max_new_tokens, int) or isinstance(self.max_new_tokens, bool)
                or self.max_new_tokens < 1):
            raise ConfigError(f"{where}: max_new_tokens must be a positive integer, got "
                              f"{self.max_new_tokens!r}")
        if not isinstance(self.stop, tuple) or not all(
                isinstance(x, str) and x for x in self.stop):
            raise ConfigError(f"{where}: stop must be a string or a list of non-empty strings, "
                              f"got {self.stop!r}")
        get_rule(self.extract)  # an unknown rule is a one-line ConfigError
        if self.extract == "regex" and not self.regex:
            raise ConfigError(f"{where}: extract: regex needs a regex option")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except (re.error, TypeError) as exc:
                raise ConfigError(f"{where}: regex {self.regex!r} is invalid: {exc}") from None
        if self.language is not None and not isinstance(self.language, str):
            raise ConfigError(f"{where}: language must be an ISO 639-1 code such as 'it'")
        if not isinstance(self.target_delimiter, str):
            raise ConfigError(f"{where}: target_delimiter must be a string")
        if self.truncate not in ("error", "left"):
            raise ConfigError(f"{where}: truncate must be error or left, got {self.truncate!r}")

    @property
    def ids(self) -> list[str]:
        return [it.id for it in self.items]

    def subset(self, ids: Iterable[str]) -> Task:
        """The same task restricted to ``ids`` (in the order given)."""
        index = {it.id: it for it in self.items}
        try:
            items = tuple(index[i] for i in ids)
        except KeyError as exc:
            raise ConfigError(f"task {self.name!r} has no item {exc.args[0]!r}") from None
        return replace(self, items=items)

    def where(self, **meta: str) -> Task:
        """Items whose metadata match every given field."""
        items = tuple(it for it in self.items
                      if all(it.meta.get(k) == v for k, v in meta.items()))
        return replace(self, items=items)


# Task fields a task file's ``options`` may set, and load_task's field mapping
TASK_OPTIONS = {"kind", "max_new_tokens", "stop", "extract", "regex", "language",
                "target_delimiter", "truncate"}
FIELD_OPTIONS = {"id_field", "prompt_field", "answer_field", "choices_field"}


def load_task(path: str | Path, *, name: str | None = None, id_field: str = "id",
              prompt_field: str = "prompt", answer_field: str = "answer",
              choices_field: str = "choices", **options: Any) -> Task:
    """A task from a JSONL or CSV file, or a local HF ``datasets`` directory.

    Each record needs a prompt and an answer; ids default to the record's row number; a
    ``choices`` list makes the task multiple choice (the answer may be the choice text or its
    index); every other field becomes metadata (language, subject, split, ...).
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"task file {p} does not exist")
    unknown = sorted(set(options) - TASK_OPTIONS)
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], sorted(TASK_OPTIONS | FIELD_OPTIONS), 1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"task file {p}: unknown option {unknown[0]!r}{hint}; options are "
                          + ", ".join(sorted(TASK_OPTIONS | FIELD_OPTIONS)))
    records = list(_read_records(p))
    if not records:
        raise ConfigError(f"task file {p} has no records")
    items = []
    for row, rec in enumerate(records):
        missing = [f for f in (prompt_field, answer_field) if f not in rec]
        if missing:
            raise ConfigError(f"task file {p}: record {row} has no field {missing[0]!r} (map "
                              f"your fields with the options prompt_field / answer_field)")
        choices = rec.get(choices_field)
        if isinstance(choices, str):
            try:
                choices = json.loads(choices) if choices.startswith("[") else choices.split("|")
            except json.JSONDecodeError:
                raise ConfigError(f"task file {p}: record {row}: choices {choices!r} is not a "
                                  "JSON list") from None
        answer = rec[answer_field]
        if choices is not None:
            if not isinstance(choices, (list, tuple)) or not choices:
                raise ConfigError(f"task file {p}: record {row}: choices must be a non-empty "
                                  "list")
            choices = tuple(str(c) for c in choices)
            if isinstance(answer, bool) or (isinstance(answer, int) and not 0 <= answer
                                            < len(choices)):
                raise ConfigError(f"task file {p}: record {row}: answer index {answer!r} is "
                                  f"not one of its {len(choices)} choices")
            if isinstance(answer, int) or (isinstance(answer, str) and answer.isdigit()
                                           and answer not in choices):
                if int(answer) >= len(choices):
                    raise ConfigError(f"task file {p}: record {row}: answer index {answer} is "
                                      f"not one of its {len(choices)} choices")
                answer = choices[int(answer)]
            elif str(answer) not in choices:
                raise ConfigError(f"task file {p}: record {row}: answer {answer!r} is not one "
                                  "of its choices")
        meta = {k: str(v) for k, v in rec.items()
                if k not in (id_field, prompt_field, answer_field, choices_field)}
        items.append(Item(id=str(rec.get(id_field, row)), prompt=str(rec[prompt_field]),
                          answer=str(answer), choices=choices, meta=meta))
    kind: TaskKind = "multiple_choice" if items[0].choices else "generate"
    options.setdefault("kind", kind)
    for key in ("stop",):
        if key in options and isinstance(options[key], str):
            options[key] = (options[key],)
        elif key in options and isinstance(options[key], list):
            options[key] = tuple(options[key])
    return Task(name=name or p.stem, items=tuple(items), **options)


def _read_records(p: Path) -> Iterable[dict[str, Any]]:
    if p.is_dir():
        try:
            import datasets
        except ImportError:  # pragma: no cover - datasets ships with the test extra
            raise ConfigError(f"{p} is a directory: reading HF datasets needs `pip install "
                              "datasets`") from None
        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            raise ConfigError(f"{p} holds several splits ({', '.join(ds)}); point to one")
        yield from ds
    elif p.suffix in (".jsonl", ".json"):
        text = read_text(p, "task file")
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{p}:{n}: invalid JSON ({exc.msg})") from None
                if not isinstance(rec, dict):
                    raise ConfigError(f"{p}:{n}: expected a JSON object with prompt and answer, "
                                      f"got {type(rec).__name__}")
                yield rec
    elif p.suffix in (".csv", ".tsv"):
        import io

        text = read_text(p, "task file")
        yield from csv.DictReader(io.StringIO(text, newline=""),
                                  delimiter="\t" if p.suffix == ".tsv" else ",")
    else:
        raise ConfigError(f"task file {p}: expected .jsonl, .csv, .tsv or a datasets directory")


def task_from_items(name: str, items: Sequence[Item], **options: Any) -> Task:
    return Task(name=name, items=tuple(items), **options)
