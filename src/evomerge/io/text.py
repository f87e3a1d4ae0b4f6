"""Reading the user's text files (recipes, configs, task files): every way such a file can be
wrong (missing, a directory, not UTF-8, bad YAML) is one line naming the file and place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from evomerge.errors import ConfigError


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of ``path`` (a BOM is dropped)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} {p} does not exist")
    if p.is_dir():
        raise ConfigError(f"{what} {p} is a directory, not a file")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {p}: {exc.strerror}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{what} {p} is not UTF-8 text (line {line}, byte {exc.start}); "
                          "save it as UTF-8") from None


def parse_yaml(text: str, what: str) -> Any:
    """``yaml.safe_load`` with one-line errors ("config x.yaml is not valid YAML at line 3:
    ...")."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{what} is not valid YAML{where}: {problem}") from None


def load_yaml_file(path: str | Path, what: str) -> Any:
    return parse_yaml(read_text(path, what), f"{what} {path}")
