"""Paths the user wrote in a config or recipe file."""

from __future__ import annotations

from pathlib import Path


def resolve_relative(p: str, base_dir: Path) -> str:
    """A path as given when it exists from here or is absolute, else relative to the file's
    directory (``base_dir``) when it exists there; otherwise unchanged, so the error that
    follows names what the user wrote."""
    path = Path(p).expanduser()
    if path.is_absolute() or path.exists():
        return str(path.resolve()) if path.exists() else str(path)
    candidate = base_dir / path
    return str(candidate.resolve()) if candidate.exists() else p
