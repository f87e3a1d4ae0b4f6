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

    def __post_init__(self) -> None:
        ids = [it.id for it in self.items]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ConfigError(f"task {self.name!r}: item id {dup!r} appears twice")
        if self.kind == "multiple_choice":
            for it in self.items:
                if not it.choices or it.answer not in it.choices:
                    raise ConfigError(f"task {self.name!r}: item {it.id!r} needs choices that "
                                      "contain its answer")

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
    records = list(_read_records(p))
    if not records:
        raise ConfigError(f"task file {p} has no records")
    items = []
    for row, rec in enumerate(records):
        missing = [f for f in (prompt_field, answer_field) if f not in rec]
        if missing:
            raise ConfigError(f"task file {p}: record {row} has no field {missing[0]!r}")
        choices = rec.get(choices_field)
        if isinstance(choices, str):
            choices = json.loads(choices) if choices.startswith("[") else choices.split("|")
        answer = rec[answer_field]
        if choices is not None:
            choices = tuple(str(c) for c in choices)
            if isinstance(answer, int) or (isinstance(answer, str) and answer.isdigit()
                                           and answer not in choices):
                answer = choices[int(answer)]
        meta = {k: str(v) for k, v in rec.items()
                if k not in (id_field, prompt_field, answer_field, choices_field)}
        items.append(Item(id=str(rec.get(id_field, row)), prompt=str(rec[prompt_field]),
                          answer=str(answer), choices=choices, meta=meta))
    kind: TaskKind = "multiple_choice" if items[0].choices else "generate"
    options.setdefault("kind", kind)
    for key in ("stop",):
        if key in options and isinstance(options[key], str):
            options[key] = (options[key],)
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
        with p.open() as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ConfigError(f"{p}:{n}: invalid JSON ({exc.msg})") from None
    elif p.suffix in (".csv", ".tsv"):
        with p.open(newline="") as f:
            yield from csv.DictReader(f, delimiter="\t" if p.suffix == ".tsv" else ",")
    else:
        raise ConfigError(f"task file {p}: expected .jsonl, .csv, .tsv or a datasets directory")


def task_from_items(name: str, items: Sequence[Item], **options: Any) -> Task:
    return Task(name=name, items=tuple(items), **options)
