"""Answer extraction rules for generative tasks, by name."""

from __future__ import annotations

import re
from collections.abc import Callable

from evomerge.errors import ConfigError

_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*")


def last_number(text: str, regex: str | None = None) -> str:
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "").rstrip(".") if found else ""


def first_number(text: str, regex: str | None = None) -> str:
    found = _NUMBER.findall(text)
    return found[0].replace(",", "").rstrip(".") if found else ""


def exact(text: str, regex: str | None = None) -> str:
    return text.strip()


def choice_letter(text: str, regex: str | None = None) -> str:
    m = re.search(r"\b([A-J])\b", text)
    return m.group(1) if m else ""


def by_regex(text: str, regex: str | None = None) -> str:
    if not regex:
        raise ConfigError("extraction rule 'regex' needs a regex")
    m = re.search(regex, text)
    if not m:
        return ""
    return (m.group(1) if m.groups() else m.group(0)).strip()


RULES: dict[str, Callable[[str, str | None], str]] = {
    "exact": exact, "last_number": last_number, "first_number": first_number,
    "choice_letter": choice_letter, "regex": by_regex,
}


def get_rule(name: str) -> Callable[[str, str | None], str]:
    try:
        return RULES[name]
    except KeyError:
        raise ConfigError(f"unknown extraction rule {name!r} (known: {', '.join(RULES)})"
                          ) from None


def matches(extracted: str, reference: str, rule: str) -> bool:
    if rule in ("last_number", "first_number"):
        try:
            return float(extracted) == float(reference)
        except ValueError:
            return False
    return extracted == reference.strip()
