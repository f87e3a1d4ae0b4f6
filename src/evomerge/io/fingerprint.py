"""Cheap content fingerprints of input files: what a resumed run and cached statistics
check to notice that a checkpoint or task file was replaced."""

from __future__ import annotations

import hashlib
from pathlib import Path

_SAMPLE = 1 << 16


def file_fingerprint(path: Path) -> str:
    """sha256 of the size and of the start, middle and end of a file (the whole file when
    small): a replaced checkpoint is caught without reading gigabytes."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with path.open("rb") as f:
        if size <= 4 * _SAMPLE:
            h.update(f.read())
        else:
            for at in (0, size // 2, size - _SAMPLE):
                f.seek(at)
                h.update(f.read(_SAMPLE))
    return h.hexdigest()[:32]
