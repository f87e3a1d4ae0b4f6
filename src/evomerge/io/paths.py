"""Paths the user wrote in a config or recipe file."""

from __future__ import annotations

from pathlib import Path


def resolve_relative(p: str, base_dir: Path) -> str:
    """A path as given when it exists from here or is absolute, else relative to the file's
    directory (``base_dir``) when it exists there; otherwise unchanged, so the error that
    follows names what the user wrote."""
    path = Path(p).expanduser()
    if "+" in p and not path.exists():  # mergekit's BASE+ADAPTER: each side on its own
        parts = p.split("+")
        for i in range(1, len(parts)):
            left = resolve_relative("+".join(parts[:i]), base_dir)
            right = resolve_relative("+".join(parts[i:]), base_dir)
            if Path(left).is_dir() and Path(right).is_dir():
                return f"{left}+{right}"
    if path.is_absolute() or path.exists():
        return str(path.resolve()) if path.exists() else str(path)
    candidate = base_dir / path
    return str(candidate.resolve()) if candidate.exists() else p
