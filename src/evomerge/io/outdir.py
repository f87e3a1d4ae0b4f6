"""Where evomerge writes: output and run directories it marks as its own, replaced only when
it wrote them, and staging directories that a later run cleans up once their writer is dead.

Every directory evomerge creates holds a ``.evomerge`` marker (JSON: what it is and, for a
model, the files written). ``--force`` / ``--fresh`` replace a directory only when it is empty
or marked and holds nothing evomerge did not write, and never the current directory, one of
its parents, an input model or a directory holding one. Work happens in a staging directory
beside the target, named ``.NAME.partial-HOST-PID-RANDOM``, renamed into place when complete;
one left behind by a killed process (its pid no longer alive on this host) is removed by the
next evomerge that writes beside it.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import glob
import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from evomerge.errors import EvomergeError

MARKER = ".evomerge"
# what a run directory may hold: everything the search loop, the report and the best
# checkpoint write (a user's own file among them makes --fresh refuse)
RUN_ENTRIES = ("config.yaml", "evaluations.jsonl", "evaluations.jsonl.torn", "subsets.yaml",
               "splits.yaml",
               "run.json", ".*.tmp-*", "smac", "best", ".best.partial-*", ".best.old-*",
               "report.md", "result.json", "fitness.png", "pareto.png", "estimated_vs_test.png",
               "progress.png", ".lock", MARKER)
_HOST = socket.gethostname().replace("-", "_")


def write_marker(directory: Path, kind: str, files: Iterable[str] | None = None) -> None:
    """Mark ``directory`` as written by evomerge (``files``: the entries it wrote)."""
    data: dict[str, Any] = {"written_by": "evomerge", "kind": kind}
    if files is not None:
        data["files"] = sorted(set(files) - {MARKER})
    (directory / MARKER).write_text(json.dumps(data, indent=1) + "\n")


def read_marker(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("written_by") == "evomerge" else None


def check_replaceable(path: str | Path, *, inputs: Iterable[str | Path] = (),
                      flag: str = "--force") -> None:
    """Raise a one-line error unless ``path`` may be deleted and replaced by evomerge."""
    p = Path(path).resolve()
    _check_not_protected(p, inputs)
    if not p.exists():
        return
    if not p.is_dir():
        raise EvomergeError(f"{p} exists and is not a directory")
    entries = sorted(e.name for e in p.iterdir())
    if not entries:
        return
    marker = read_marker(p)
    if marker is None and {"config.yaml", "evaluations.jsonl"} <= set(entries) and all(
            any(fnmatch.fnmatchcase(e, a) for a in RUN_ENTRIES) for e in entries):
        marker = {"kind": "run"}  # a run directory of an evomerge from before the marker
    if marker is None:
        raise EvomergeError(f"{flag} refuses to replace {p}: evomerge did not write it (no "
                            f"{MARKER} marker); remove it yourself or choose another path")
    allowed = RUN_ENTRIES if marker.get("kind") == "run" else (*marker.get("files", []), MARKER)
    foreign = [e for e in entries if not any(fnmatch.fnmatchcase(e, a) for a in allowed)]
    if foreign:
        raise EvomergeError(f"{flag} refuses to replace {p}: it holds {foreign[0]!r}, which "
                            "evomerge did not write; move it away or choose another path")


def check_target(path: str | Path, *, inputs: Iterable[str | Path] = ()) -> None:
    """Refuse to write into the current directory, a parent of it, or over an input."""
    _check_not_protected(Path(path).resolve(), inputs)


def _check_not_protected(p: Path, inputs: Iterable[str | Path]) -> None:
    cwd = Path.cwd().resolve()
    if p == cwd or p in cwd.parents:
        raise EvomergeError(f"refusing to use {p} as an output: it is the current directory "
                            "or holds it; choose a new directory")
    for inp in inputs:
        ip = Path(inp).expanduser().resolve()
        if ip == p or p in ip.parents:
            raise EvomergeError(f"refusing to use {p} as an output: it holds the input {inp}; "
                                "choose another directory")


def atomic_write_text(path: Path, text: str) -> None:
    """Write a small file so that a kill leaves the old content or the new, never half."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


# -- staging -------------------------------------------------------------------------------
def _stage_name(target: Path, kind: str) -> str:
    return f".{target.name}.{kind}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(target: Path) -> list[Path]:
    """Remove staging directories of ``target`` left by dead evomerge processes on this
    host (marked, named ``.NAME.partial|old-HOST-PID-*``); returns what was removed."""
    removed = []
    parent = target.parent
    if not parent.is_dir():
        return removed
    for kind in ("partial", "old"):
        for entry in parent.glob(f".{glob.escape(target.name)}.{kind}-{_HOST}-*"):
            parts = entry.name.rsplit("-", 2)
            try:
                pid = int(parts[1])
            except (IndexError, ValueError):
                continue
            if pid != os.getpid() and not _pid_alive(pid) and read_marker(entry) is not None:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


def make_staging(target: Path, kind: str = "model") -> Path:
    """A fresh marked staging directory beside ``target`` (stale ones cleaned first)."""
    clean_stale(target)
    tmp = target.parent / _stage_name(target, "partial")
    try:
        tmp.mkdir()
        write_marker(tmp, kind)
    except BaseException as exc:  # an interrupt too: nothing is left behind
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise write_error(target, exc) from None
        raise
    return tmp


def commit_staging(tmp: Path, target: Path) -> Path:
    """Move a finished staging directory to ``target``, replacing an existing one (already
    checked as evomerge's own by the caller); the old one is removed after the swap."""
    old = None
    if target.exists():
        old = target.parent / _stage_name(target, "old")
        os.rename(target, old)
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


@contextlib.contextmanager
def output_dir(target: Path, kind: str = "model", inputs: Iterable[str | Path] = ()
               ) -> Iterator[Path]:
    """Write a directory output: yields a staging directory beside ``target`` (its missing
    parents made first); when the body ends, marks it with the files written and moves it to
    ``target`` (an existing one is checked again as evomerge's own). On any exception or
    interrupt, the staging directory and the parents it made are removed and ``target`` is
    left untouched."""
    made = make_parents(target)
    try:
        tmp = make_staging(target, kind)
        try:
            yield tmp
            if target.exists():
                check_replaceable(target, inputs=inputs)
            try:
                write_marker(tmp, kind, [p.name for p in tmp.iterdir()])
                commit_staging(tmp, target)
            except OSError as exc:
                raise write_error(target, exc) from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        remove_empty(made)
        raise


def write_error(target: Path, exc: OSError) -> EvomergeError:
    """One line for a failed write: read-only location, permission, full disk."""
    reason = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
              errno.EROFS: "the location is read-only", errno.EACCES: "permission denied",
              errno.EPERM: "permission denied"}.get(exc.errno or 0, exc.strerror or str(exc))
    return EvomergeError(f"cannot write {target}: {reason}; nothing was written there")


def ensure_space(where: Path, nbytes: int, what: str) -> None:
    """Refuse before any work when the file system lacks room for ``nbytes`` (+1 %)."""
    probe = where
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    need = int(nbytes * 1.01) + (1 << 20)
    if free < need:
        raise EvomergeError(f"not enough space for {what} in {probe}: needs "
                            f"{need / 1e6:.1f} MB, {free / 1e6:.1f} MB free")


def make_parents(path: Path) -> list[Path]:
    """Create the missing parents of ``path``; returns those created (to undo on failure)."""
    missing = []
    p = path.parent
    while not p.exists():
        missing.append(p)
        p = p.parent
    if not p.is_dir():
        raise EvomergeError(f"cannot create {path.parent}: {p} is a file")
    try:
        for d in reversed(missing):
            d.mkdir()
    except OSError as exc:
        remove_empty(missing)
        raise write_error(path, exc) from None
    return missing


def remove_empty(dirs: list[Path]) -> None:
    """Remove directories we created, innermost first, if they are still empty."""
    for d in dirs:  # innermost first
        with contextlib.suppress(OSError):
            d.rmdir()
