"""Where the committed demo zoo lives, and its checksum manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from evomerge.errors import ModelError
from evomerge.io.outdir import MARKER

ZOO_DIR = Path(__file__).resolve().parent / "checkpoints"
MANIFEST = "MANIFEST.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(root: Path, recipe: dict[str, Any], models: list[str]) -> dict[str, Any]:
    files = {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*"))
             if p.is_file() and p.name not in (MANIFEST, MARKER)}
    manifest = {"recipe": recipe, "models": models, "files": files,
                "total_bytes": sum((root / f).stat().st_size for f in files)}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(root: Path = ZOO_DIR) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.exists():
        raise ModelError(f"no demo zoo in {root} (build it with `evomerge zoo build`)")
    return json.loads(path.read_text())


def verify(root: Path = ZOO_DIR) -> dict[str, Any]:
    """Check every file against the manifest; returns the manifest."""
    manifest = read_manifest(root)
    for rel, digest in manifest["files"].items():
        path = root / rel
        if not path.exists():
            raise ModelError(f"demo zoo file {rel} is missing from {root}")
        if sha256(path) != digest:
            raise ModelError(f"demo zoo file {rel} does not match its checksum")
    return manifest


def zoo_models(root: Path = ZOO_DIR) -> dict[str, Path]:
    """name -> checkpoint directory of every zoo model."""
    return {name: root / name for name in read_manifest(root)["models"]}
