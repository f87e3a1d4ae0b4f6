"""Append-only run record: one JSON line per finished evaluation, flushed and fsynced as it
completes. A run killed at any point loses at most the evaluation in flight; a torn last
line (killed mid-write) is ignored on reading."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

RECORD_FILE = "evaluations.jsonl"


def recipe_key(recipe: dict[str, Any], *scope: str) -> str:
    """Stable fitness-cache key of a recipe (and what it was evaluated on)."""
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":")) + "|" + "|".join(scope)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class RunStore:
    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / RECORD_FILE
        self.records: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        if self.path.exists():
            self._load()
        self._fh = self.path.open("a")

    def _load(self) -> None:
        raw = self.path.read_bytes()
        good = 0
        for line in raw.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn write from a kill: drop it
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break
            good += len(line)
            if rec["key"] not in self.records:
                self.order.append(rec["key"])
            self.records[rec["key"]] = rec
        if good < len(raw):
            with self.path.open("r+b") as f:
                f.truncate(good)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def add(self, record: dict[str, Any]) -> None:
        if record["key"] in self.records:
            raise RuntimeError(f"evaluation {record['key']} is already recorded")
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.records[record["key"]] = record
        self.order.append(record["key"])

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [self.records[k] for k in self.order if self.records[k]["kind"] == kind]

    def close(self) -> None:
        self._fh.close()
