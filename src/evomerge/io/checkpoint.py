"""Lazy reading of Hugging Face checkpoints from local directories.

Tensors are read one at a time through memory maps (safetensors ``safe_open``, or
``torch.load(mmap=True, weights_only=True)`` for ``.bin``), so merging N models never holds N
whole models in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError, safe_open

from evomerge.errors import ModelError

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN_SINGLE = "pytorch_model.bin"


class TensorSource(Protocol):
    """Anything the merge planner can read tensors from: a checkpoint or an in-memory dict."""

    name: str
    config: dict[str, Any] | None

    def names(self) -> list[str]: ...

    def __contains__(self, name: str) -> bool: ...

    def shape(self, name: str) -> tuple[int, ...]: ...

    def dtype(self, name: str) -> torch.dtype: ...

    def get(self, name: str) -> torch.Tensor: ...


_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}


class Checkpoint:
    """A local Hugging Face model directory, read lazily."""

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or str(path)
        if not self.path.is_dir():
            raise ModelError(f"model {self.name!r}: directory {self.path} does not exist")
        self.config = _read_json(self.path / "config.json", self.name, required=False)
        self._file_of: dict[str, Path] = {}
        self._handles: dict[Path, Any] = {}
        self._bin: dict[Path, dict[str, torch.Tensor]] = {}
        self._index_files()

    # -- discovery -------------------------------------------------------------------------
    def _index_files(self) -> None:
        p = self.path
        if (p / SAFETENSORS_INDEX).exists():
            self._from_index(p / SAFETENSORS_INDEX)
        elif (p / SAFETENSORS_SINGLE).exists():
            self._add_file(p / SAFETENSORS_SINGLE)
        elif (p / BIN_INDEX).exists():
            self._from_index(p / BIN_INDEX)
        elif (p / BIN_SINGLE).exists():
            self._add_file(p / BIN_SINGLE)
        else:
            loose = sorted(p.glob("*.safetensors"))
            if not loose:
                raise ModelError(
                    f"model {self.name!r}: no model.safetensors, sharded index or "
                    f"pytorch_model.bin in {p}"
                )
            for f in loose:
                self._add_file(f)

    def _from_index(self, index_path: Path) -> None:
        index = _read_json(index_path, self.name, required=True)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            raise ModelError(f"model {self.name!r}: {index_path.name} has no weight_map")
        files = {f: self._confined(f, index_path.name) for f in set(weight_map.values())}
        for f in files.values():
            if not f.exists():
                raise ModelError(f"model {self.name!r}: shard {f.name} listed in index is missing")
        for tensor, f in weight_map.items():
            self._file_of[tensor] = files[f]
        held = {f: set(self._open(f)) for f in files.values()}  # validates headers up front
        for tensor, f in weight_map.items():
            if tensor not in held[files[f]]:
                raise ModelError(f"model {self.name!r}: {index_path.name} places tensor {tensor} "
                                 f"in {f}, which does not hold it")

    def _confined(self, name: Any, index: str) -> Path:
        """A file named by an index, which must stay inside the model directory (after
        symlinks; a Hugging Face cache snapshot may link into its repository's blobs/)."""
        if not isinstance(name, str) or not name or "\x00" in name:
            raise ModelError(f"model {self.name!r}: {index} names an invalid file {name!r}")
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise ModelError(f"model {self.name!r}: {index} names {name!r}, outside the model "
                             "directory; refusing to read it")
        root = self.path.resolve()
        target = (self.path / rel).resolve()
        blobs = root.parent.parent / "blobs" if root.parent.name == "snapshots" else None
        if not (target.is_relative_to(root) or (blobs is not None
                                                and target.is_relative_to(blobs))):
            raise ModelError(f"model {self.name!r}: {name} (named by {index}) resolves to "
                             f"{target}, outside the model directory; refusing to read it")
        return self.path / rel

    def _add_file(self, f: Path) -> None:
        f = self._confined(f.name, f.name)
        for tensor in self._open(f):
            self._file_of[tensor] = f

    def _open(self, f: Path) -> Iterable[str]:
        if f.suffix == ".safetensors":
            try:
                handle = safe_open(str(f), framework="pt", device="cpu")
            except (SafetensorError, OSError, ValueError) as exc:
                raise ModelError(
                    f"model {self.name!r}: cannot read {f.name} (unreadable or truncated): "
                    f"{_first_line(exc)}"
                ) from None
            self._handles[f] = handle
            return list(handle.keys())
        try:
            state = torch.load(str(f), map_location="cpu", mmap=True, weights_only=True)
        except Exception as exc:  # torch raises many types for corrupt archives
            raise ModelError(
                f"model {self.name!r}: cannot read {f.name} (unreadable, truncated or not a "
                f"plain state dict): {_first_line(exc)}"
            ) from None
        if not isinstance(state, dict):
            raise ModelError(f"model {self.name!r}: {f.name} does not hold a state dict")
        self._bin[f] = state
        return list(state.keys())

    # -- TensorSource ----------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._file_of)

    def __contains__(self, name: str) -> bool:
        return name in self._file_of

    def shape(self, name: str) -> tuple[int, ...]:
        f = self._locate(name)
        if f in self._handles:
            return tuple(self._handles[f].get_slice(name).get_shape())
        return tuple(self._bin[f][name].shape)

    def dtype(self, name: str) -> torch.dtype:
        f = self._locate(name)
        if f in self._handles:
            return _ST_DTYPES.get(self._handles[f].get_slice(name).get_dtype(), torch.float32)
        return self._bin[f][name].dtype

    def get(self, name: str) -> torch.Tensor:
        f = self._locate(name)
        if f in self._handles:
            try:
                return self._handles[f].get_tensor(name)
            except (SafetensorError, OSError, ValueError) as exc:
                raise ModelError(
                    f"model {self.name!r}: cannot read tensor {name} from {f.name}: "
                    f"{_first_line(exc)}"
                ) from None
        return self._bin[f][name]

    def _locate(self, name: str) -> Path:
        try:
            return self._file_of[name]
        except KeyError:
            raise ModelError(f"model {self.name!r}: tensor {name} is missing") from None

    def close(self) -> None:
        """Drop the memory maps (their pages count in the process's memory while open)."""
        self._handles.clear()
        self._bin.clear()

    def total_bytes(self) -> int:
        return sum(f.stat().st_size for f in set(self._file_of.values()))


class TensorDictSource:
    """An in-memory tensor source (a state dict), for merging without touching disk."""

    def __init__(self, tensors: dict[str, torch.Tensor], name: str = "<memory>",
                 config: dict[str, Any] | None = None) -> None:
        self.tensors = tensors
        self.name = name
        self.config = config

    def names(self) -> list[str]:
        return list(self.tensors)

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._get(name).shape)

    def dtype(self, name: str) -> torch.dtype:
        return self._get(name).dtype

    def get(self, name: str) -> torch.Tensor:
        return self._get(name)

    def _get(self, name: str) -> torch.Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise ModelError(f"model {self.name!r}: tensor {name} is missing") from None


def close_source(source: Any) -> None:
    """Drop a source's memory maps when it has any (a checkpoint, a LoRA adapter's base)."""
    close = getattr(source, "close", None)
    if callable(close):
        close()


def require_finite(tensor: torch.Tensor, name: str, model: str, hint: str = "") -> torch.Tensor:
    """``tensor`` unchanged, or a one-line error naming it when it holds NaN or Inf."""
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise ModelError(f"tensor {name} of model {model!r} holds NaN or infinite values{hint}")
    return tensor


def _read_json(path: Path, model: str, required: bool) -> Any:
    if not path.exists():
        if required:
            raise ModelError(f"model {model!r}: {path.name} is missing")
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"model {model!r}: {path.name} is not valid JSON: {exc}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
