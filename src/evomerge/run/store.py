"""Append-only run record: one JSON line per finished evaluation, flushed and fsynced as it
completes, in a run directory locked by one process at a time.

What a crash can leave is a torn *last* line (bytes after the last newline): on resume it
is moved to ``evaluations.jsonl.torn`` and cut off, and ``report`` skips it. Anything else
that cannot be read (garbage, a line that is not a record) stops ``--resume`` and ``report``
with one line naming the line number; the file is never rewritten, so no finished
evaluation is ever lost.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from evomerge.errors import EvomergeError

RECORD_FILE = "evaluations.jsonl"
TORN_FILE = "evaluations.jsonl.torn"
LOCK_FILE = ".lock"
KINDS = ("calibration", "candidate", "check", "test", "validation")


class RecordError(EvomergeError):
    """The run record holds something that is not a record (other than a torn last line)."""


def recipe_key(recipe: dict[str, Any], *scope: str) -> str:
    """Stable fitness-cache key of a recipe (and what it was evaluated on)."""
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":")) + "|" + "|".join(scope)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _problem(rec: Any) -> str | None:
    """Why a parsed line is not an evaluation record, or None."""
    if not isinstance(rec, dict):
        return f"expected a record (a JSON object), found {type(rec).__name__}"
    for field, kind in (("key", str), ("kind", str), ("split", str), ("recipe", dict),
                        ("tasks", dict)):
        if not isinstance(rec.get(field), kind):
            return f"the record has no valid {field!r}"
    if rec["kind"] not in KINDS:
        return f"unknown record kind {rec['kind']!r}"
    for name, res in rec["tasks"].items():
        if not (isinstance(res, dict) and isinstance(res.get("ids"), list)
                and isinstance(res.get("correct"), list)
                and len(res["ids"]) == len(res["correct"])):
            return f"task {name!r} has no matching ids and correct lists"
    if rec["kind"] == "candidate" and not (
            isinstance(rec.get("estimates"), dict)
            and all(isinstance(v, (int, float)) for v in rec["estimates"].values())):
        return "a candidate record has no estimates"
    return None


def read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(records in file order, length in bytes of the readable part). A torn last line is
    not returned; anything else unreadable raises ``RecordError`` naming its line."""
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    tail = lines.pop()  # bytes after the last newline: a torn write, or b""
    records, good = [], 0
    for n, line in enumerate(lines, start=1):
        text = line.strip(b" \t\r")
        if n == len(lines) and not tail and text and not text.strip(b"\x00"):
            break  # a zero-filled last line (a power loss on some file systems)
        if not text:  # blank lines are never written
            raise RecordError(f"{path}:{n}: empty line in the run record; the record was left "
                              "as it is: remove that line, then resume")
        try:
            rec = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            rec, why = None, "not a JSON record"
        else:
            why = _problem(rec)
        if why is not None:
            raise RecordError(f"{path}:{n}: {why}; the run record was left as it is: repair "
                              "or remove that line (and any after it), then resume")
        records.append(rec)
        good += len(line) + 1
    return records, good


class RunLock:
    """An exclusive lock (``flock``) on a run directory for the whole run: a second evomerge
    process on the same directory stops with one line instead of repeating the work."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise EvomergeError(f"cannot lock run directory {run_dir}: {exc.strerror}"
                                ) from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise EvomergeError(f"run directory {run_dir} is in use by another evomerge "
                                f"process (pid {holder}); wait for it to end") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


class RunStore:
    """The record of one run, opened for appending by the process holding its lock."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / RECORD_FILE
        self.records: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        if self.path.exists():
            self._load()
        self._fh = self.path.open("ab")

    def _load(self) -> None:
        records, good = read_records(self.path)
        size = self.path.stat().st_size
        if good < size:  # keep the torn bytes beside the record, then cut them off
            with self.path.open("rb") as f:
                f.seek(good)
                torn = f.read()
            with (self.path.parent / TORN_FILE).open("ab") as f:
                f.write(torn + b"\n")
                f.flush()
                os.fsync(f.fileno())
            with self.path.open("r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())
        for rec in records:
            if rec["key"] not in self.records:  # the first record of a key is the one used
                self.order.append(rec["key"])
                self.records[rec["key"]] = rec

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def add(self, record: dict[str, Any]) -> None:
        if record["key"] in self.records:
            raise RuntimeError(f"evaluation {record['key']} is already recorded")
        try:
            self._fh.write((json.dumps(record, separators=(",", ":")) + "\n").encode())
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            from evomerge.io.outdir import write_error

            raise write_error(self.path, exc) from None
        self.records[record["key"]] = record
        self.order.append(record["key"])

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [self.records[k] for k in self.order if self.records[k]["kind"] == kind]

    def close(self) -> None:
        self._fh.close()
