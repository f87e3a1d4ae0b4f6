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
    # few-shot examples drawn (seeded per item) from fewshot_pool, never the item itself;
    # chat: the tokenizer's chat template (optional system message); see eval/prompts.py
    fewshot: int = 0
    fewshot_seed: int = 0
    fewshot_delimiter: str = "\n\n"
    fewshot_pool: tuple[Item, ...] = field(default=(), repr=False)
    chat: bool = False
    system: str | None = None

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
        if not isinstance(self.fewshot, int) or isinstance(self.fewshot, bool) or (
                self.fewshot < 0):
            raise ConfigError(f"{where}: fewshot must be a count >= 0, got {self.fewshot!r}")
        if self.fewshot and len(self.fewshot_pool) < self.fewshot:
            raise ConfigError(f"{where}: fewshot {self.fewshot} needs at least that many "
                              f"examples (fewshot_from), got {len(self.fewshot_pool)}")
        if not isinstance(self.chat, bool):
            raise ConfigError(f"{where}: chat must be true or false")
        if self.system is not None and (not isinstance(self.system, str) or not self.chat):
            raise ConfigError(f"{where}: system is a chat system message (a string; needs "
                              "chat: true)")
        if not isinstance(self.fewshot_delimiter, str):
            raise ConfigError(f"{where}: fewshot_delimiter must be a string")
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
                "target_delimiter", "truncate", "fewshot", "fewshot_seed",
                "fewshot_delimiter", "chat", "system"}
FIELD_OPTIONS = {"id_field", "prompt_field", "answer_field", "choices_field",
                 "prompt_template", "answer_template", "split", "search_split",
                 "test_split", "dataset_config"}
HUB = "hf:"  # a Hugging Face Hub dataset instead of a path: hf:openai/gsm8k


def load_task(path: str | Path, *, name: str | None = None, id_field: str = "id",
              prompt_field: str = "prompt", answer_field: str = "answer",
              choices_field: str = "choices", prompt_template: str | None = None,
              answer_template: str | None = None, split: str | None = None,
              fewshot_from: str | Path | None = None, dataset_config: str | None = None,
              **options: Any) -> Task:
    """A task from a JSONL, CSV/TSV or Parquet file, or a local HF ``datasets`` directory
    (``split`` picks one split of a saved ``DatasetDict``).

    Each record needs a prompt and an answer: fields named by ``prompt_field`` and
    ``answer_field``, or Jinja templates over the record (``prompt_template: "Q:
    {{question}}\nA:"``, lm-eval's ``doc_to_text`` style); ids default to the row number; a
    ``choices`` list makes the task multiple choice (the answer may be the choice text or its
    index); every other field becomes metadata (language, subject, split, ...).

    ``hf:OWNER/NAME`` loads a Hub dataset with ``datasets.load_dataset`` (its configuration
    in the option ``dataset_config``, one ``split``); it needs the network or the dataset in
    the local Hugging Face cache.
    """
    hub = str(path).startswith(HUB)
    p = Path(path)
    if not hub and not p.exists():
        raise ConfigError(f"task file {p} does not exist")
    prompt_of = _field_or_template(prompt_field, prompt_template, "prompt_template")
    answer_of = _field_or_template(answer_field, answer_template, "answer_template")
    options = task_options(options, f"task file {p}", TASK_OPTIONS | FIELD_OPTIONS)
    records = (list(_hub_records(str(path)[len(HUB):], dataset_config, split)) if hub
               else list(_read_records(p, split)))
    if not records:
        raise ConfigError(f"task file {p} has no records")
    items = []
    # messages count records from 1, as the JSONL line numbers of _read_records do
    for row, rec in enumerate(records):
        missing = [f for f, t in ((prompt_field, prompt_template),
                                  (answer_field, answer_template)) if t is None and f not in rec]
        if missing:
            raise ConfigError(f"task file {p}: record {row + 1} has no field {missing[0]!r} (its "
                              f"fields: {', '.join(map(str, rec))}; map them with the options "
                              "prompt_field / answer_field or prompt_template)")
        try:
            prompt, answer = prompt_of(rec), answer_of(rec)
        except Exception as exc:  # jinja: an undefined field, a bad filter
            raise ConfigError(f"task file {p}: record {row + 1}: template failed: {exc}") from None
        choices = rec.get(choices_field)
        if isinstance(choices, str):
            try:
                choices = json.loads(choices) if choices.startswith("[") else choices.split("|")
            except json.JSONDecodeError:
                raise ConfigError(f"task file {p}: record {row + 1}: choices {choices!r} is not a "
                                  "JSON list") from None
        if choices is not None:
            if not isinstance(choices, (list, tuple)) or not choices:
                raise ConfigError(f"task file {p}: record {row + 1}: choices must be a non-empty "
                                  "list")
            choices = tuple(str(c) for c in choices)
            is_index = isinstance(answer, int) or (isinstance(answer, str) and answer.isdigit()
                                                   and answer not in choices)
            if isinstance(answer, bool) or (is_index and not 0 <= int(answer) < len(choices)):
                raise ConfigError(f"task file {p}: record {row + 1}: answer index {answer!r} is "
                                  f"not one of its {len(choices)} choices")
            if is_index:
                answer = choices[int(answer)]
            elif str(answer) not in choices:
                raise ConfigError(f"task file {p}: record {row + 1}: answer {answer!r} is not one "
                                  "of its choices")
        meta = {k: str(v) for k, v in rec.items()
                if k not in (id_field, prompt_field, answer_field, choices_field)}
        items.append(Item(id=str(rec.get(id_field, row)), prompt=str(prompt),
                          answer=str(answer), choices=choices, meta=meta))
    kind: TaskKind = "multiple_choice" if items[0].choices else "generate"
    options.setdefault("kind", kind)
    if fewshot_from is not None:  # examples read with the same field mapping
        options["fewshot_pool"] = load_task(
            fewshot_from, name=f"{name or p.stem}/fewshot", id_field=id_field,
            prompt_field=prompt_field, answer_field=answer_field,
            choices_field=choices_field, prompt_template=prompt_template,
            answer_template=answer_template).items
    return Task(name=name or p.stem, items=tuple(items), **options)


def task_options(options: dict[str, Any], where: str, known: set[str] = TASK_OPTIONS
                 ) -> dict[str, Any]:
    """A task's options, checked by name (an unknown one is one line with the closest known
    name) and with ``stop`` given as a string or a list made a tuple."""
    unknown = sorted(set(options) - TASK_OPTIONS)
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], sorted(known), 1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where}: unknown option {unknown[0]!r}{hint}; options are "
                          + ", ".join(sorted(known)))
    options = dict(options)
    if isinstance(options.get("stop"), (str, list)):
        stop = options["stop"]
        options["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
    return options


def _field_or_template(field: str, template: str | None, what: str) -> Any:
    """record -> value: the named field, or a Jinja template rendered over the record."""
    if template is None:
        return lambda rec: rec[field]
    if not isinstance(template, str):
        raise ConfigError(f"{what} must be a string such as 'Q: {{{{question}}}}'")
    import jinja2

    try:
        compiled = jinja2.Environment(undefined=jinja2.StrictUndefined,
                                      keep_trailing_newline=True).from_string(template)
    except jinja2.TemplateError as exc:
        raise ConfigError(f"{what} {template!r} is not a valid template: {exc}") from None
    return lambda rec: compiled.render(**rec)


def _hub_records(name: str, config: str | None, split: str | None
                 ) -> Iterable[dict[str, Any]]:
    """The rows of one split of a Hugging Face Hub dataset (network or local HF cache)."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets ships with the test extra
        raise ConfigError(f"hf:{name}: Hub datasets need `pip install datasets`") from None
    if split is None:
        raise ConfigError(f"hf:{name}: choose its split with the option split (or "
                          "search_split / test_split)")
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # no network, unknown name or config, missing split
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"hf:{name}: could not load split {split!r} from the Hugging Face "
                          f"Hub ({first}); offline, save it once with datasets' save_to_disk "
                          "and name that directory instead") from None
    yield from ds


def _read_records(p: Path, split: str | None = None) -> Iterable[dict[str, Any]]:
    if p.is_dir():
        try:
            import datasets
        except ImportError:  # pragma: no cover - datasets ships with the test extra
            raise ConfigError(f"{p} is a directory: reading HF datasets needs `pip install "
                              "datasets`") from None
        try:
            ds = datasets.load_from_disk(str(p))
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError(f"{p} is not a saved datasets directory: "
                              f"{str(exc).splitlines()[0]}") from None
        if isinstance(ds, datasets.DatasetDict):
            if split is None or split not in ds:
                raise ConfigError(f"{p} holds the splits {', '.join(ds)}; choose one with the "
                                  "option split")
            ds = ds[split]
        elif split is not None:
            raise ConfigError(f"{p} holds one split; remove the option split")
        yield from ds
    elif p.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError(f"{p}: reading Parquet needs `pip install pyarrow`") from None
        try:
            yield from pq.read_table(p).to_pylist()
        except Exception as exc:  # pyarrow raises its own types for damaged files
            raise ConfigError(f"{p} is not a readable Parquet file: {exc}") from None
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
        raise ConfigError(f"task file {p}: expected .jsonl, .csv, .tsv, .parquet or a datasets "
                          "directory")


def task_from_items(name: str, items: Sequence[Item], **options: Any) -> Task:
    return Task(name=name, items=tuple(items), **options)
