"""Atomic, streaming, sharded safetensors writing.

The merge plan knows every output tensor's name, shape and dtype before any arithmetic runs,
so the safetensors headers are written first and each tensor's bytes go straight to their
final offset (``os.pwrite`` on a background thread) as soon as they are computed: no shard is
ever accumulated in memory and writing overlaps compute. Everything lands in a temporary
directory beside the output that is renamed into place only when the model is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from evomerge.errors import EvomergeError
from evomerge.io.outdir import (
    check_replaceable,
    check_target,
    commit_staging,
    ensure_space,
    make_parents,
    make_staging,
    remove_empty,
    write_error,
    write_marker,
)

ST_DTYPE = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
DEFAULT_SHARD_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class TensorSlot:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * torch.empty((), dtype=self.dtype).element_size()


@dataclass
class _Shard:
    path: Path
    offsets: dict[str, tuple[int, int]]  # absolute file offsets of each tensor's bytes
    fd: int = -1


def parse_size(text: str | int) -> int:
    """'500MB', '2GB', '1.5G', 10**9 -> bytes."""
    if isinstance(text, int):
        value: float = text
    else:
        s = text.strip().upper().removesuffix("B")
        mult = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
        try:
            value = (float(s[:-1]) * mult[s[-1]]) if s and s[-1] in mult else float(s)
        except ValueError:
            value = float("nan")
    if not 1 <= value < 2**62:  # also NaN and inf
        raise EvomergeError(f"invalid size {text!r} (expected e.g. 500MB or 2GB)")
    return int(value)


def prepare_output(out: Path, force: bool, inputs: Iterable[str | Path] = ()) -> None:
    """Refuse an existing output before any work starts (unless forced and evomerge's own),
    and any output that is the current directory, holds it, or holds an input."""
    check_target(out, inputs=inputs)
    if out.exists() and not force:
        raise EvomergeError(f"output {out} already exists (use --force to replace it)")
    if force:
        check_replaceable(out, inputs=inputs)
    existing = next((p for p in out.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise EvomergeError(f"cannot create output directory {out.parent}: {existing} is a file")


class CheckpointWriter:
    """Writes one checkpoint into a temporary directory and renames it into place.

    Use as a context manager: on any exception the temporary directory is removed and the
    output path is left exactly as it was.
    """

    def __init__(self, out: str | Path, slots: Sequence[TensorSlot], *, force: bool = False,
                 max_shard_bytes: int = DEFAULT_SHARD_BYTES, metadata: dict[str, str] | None = None,
                 inputs: Iterable[str | Path] = ()) -> None:
        self.out = Path(out).resolve()
        self.inputs = list(inputs)
        prepare_output(self.out, force, self.inputs)
        self.force = force
        self._tmp: Path | None = None  # the staging directory, made on __enter__
        self._made_parents: list[Path] = []
        self.slots = {s.name: s for s in slots}
        self.max_shard_bytes = max_shard_bytes
        self.metadata = {"format": "pt", **(metadata or {})}
        self._shards: list[_Shard] = []
        self._shard_of: dict[str, _Shard] = {}
        self._pending: list[Future[None]] = []
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="evomerge-write")
        self._written: set[str] = set()
        self._closed = False

    @property
    def tmp(self) -> Path:
        """The staging directory (exists between ``__enter__`` and ``commit``)."""
        assert self._tmp is not None, "use CheckpointWriter as a context manager"
        return self._tmp

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> CheckpointWriter:
        ensure_space(self.out.parent, sum(s.nbytes for s in self.slots.values()),
                     f"the merged model {self.out.name}")
        self._made_parents = make_parents(self.out)  # only once work starts
        try:
            self._tmp = make_staging(self.out)
        except BaseException:
            remove_empty(self._made_parents)
            raise
        try:
            self._layout()
        except BaseException as exc:
            self._abort()
            if isinstance(exc, OSError):
                raise write_error(self.out, exc) from None
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self._abort()
            if isinstance(exc, OSError) and not isinstance(exc, EvomergeError):
                raise write_error(self.out, exc) from None

    def _abort(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._close_fds()
        if not self._closed and self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            remove_empty(self._made_parents)
        self._closed = True

    def _close_fds(self) -> None:
        for shard in self._shards:
            if shard.fd >= 0:
                os.close(shard.fd)
                shard.fd = -1

    # -- layout: headers first -------------------------------------------------------------
    def _layout(self) -> None:
        groups: list[list[TensorSlot]] = [[]]
        size = 0
        for slot in self.slots.values():
            if groups[-1] and size + slot.nbytes > self.max_shard_bytes:
                groups.append([])
                size = 0
            groups[-1].append(slot)
            size += slot.nbytes
        n = len(groups)
        for i, group in enumerate(groups):
            fname = "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            self._shards.append(self._write_header(self.tmp / fname, group))

    def _write_header(self, path: Path, group: list[TensorSlot]) -> _Shard:
        header: dict[str, Any] = {"__metadata__": self.metadata}
        pos = 0
        rel: dict[str, tuple[int, int]] = {}
        for slot in group:
            if slot.dtype not in ST_DTYPE:
                raise EvomergeError(f"tensor {slot.name}: dtype {slot.dtype} cannot be saved")
            header[slot.name] = {"dtype": ST_DTYPE[slot.dtype], "shape": list(slot.shape),
                                 "data_offsets": [pos, pos + slot.nbytes]}
            rel[slot.name] = (pos, pos + slot.nbytes)
            pos += slot.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        start = 8 + len(raw)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.pwrite(fd, struct.pack("<Q", len(raw)) + raw, 0)
        os.ftruncate(fd, start + pos)
        shard = _Shard(path=path, offsets={k: (start + a, start + b) for k, (a, b) in rel.items()},
                       fd=fd)
        for name in rel:
            self._shard_of[name] = shard
        return shard

    # -- data ------------------------------------------------------------------------------
    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Queue one tensor's bytes for writing at its planned offset."""
        slot = self.slots.get(name)
        if slot is None:
            raise KeyError(f"tensor {name} was not planned")
        if tuple(tensor.shape) != slot.shape or tensor.dtype != slot.dtype:
            raise ValueError(f"tensor {name}: got {tuple(tensor.shape)} {tensor.dtype}, "
                             f"planned {slot.shape} {slot.dtype}")
        self._raise_pending()
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        shard = self._shard_of[name]
        offset = shard.offsets[name][0]
        self._pending.append(self._pool.submit(_pwrite_tensor, shard.fd, data, offset))
        self._written.add(name)

    def _raise_pending(self, wait: bool = False) -> None:
        keep = []
        for fut in self._pending:
            if wait or fut.done():
                fut.result()
            else:
                keep.append(fut)
        self._pending = keep

    def write_text(self, relpath: str, text: str) -> None:
        (self.tmp / relpath).write_text(text)

    def write_bytes(self, relpath: str, data: bytes) -> None:
        (self.tmp / relpath).write_bytes(data)

    def write_json(self, relpath: str, obj: Any) -> None:
        self.write_text(relpath, json.dumps(obj, indent=2, sort_keys=False) + "\n")

    def copy_file(self, src: Path, relpath: str | None = None) -> None:
        shutil.copy2(src, self.tmp / (relpath or src.name))

    def commit(self) -> Path:
        """Finish the checkpoint and move it into place; returns the output path."""
        missing = set(self.slots) - self._written
        if missing:
            raise RuntimeError(f"{len(missing)} planned tensors were never written, "
                               f"e.g. {sorted(missing)[0]}")
        self._raise_pending(wait=True)
        self._pool.shutdown(wait=True)
        self._close_fds()
        if len(self._shards) > 1:
            total = sum(s.nbytes for s in self.slots.values())
            weight_map = {name: shard.path.name for name, shard in self._shard_of.items()}
            self.write_json("model.safetensors.index.json",
                            {"metadata": {"total_size": total}, "weight_map": weight_map})
        if self.out.exists():  # checked again: it may have changed while we merged
            check_replaceable(self.out, inputs=self.inputs)
        for shard in self._shards:  # data on disk before the directory appears
            with open(shard.path, "rb+") as f:
                os.fsync(f.fileno())
        write_marker(self.tmp, "model", [p.name for p in self.tmp.iterdir()])
        commit_staging(self.tmp, self.out)
        self._closed = True
        return self.out


def _pwrite_tensor(fd: int, data: torch.Tensor, offset: int) -> None:
    buf = memoryview(data.view(torch.uint8).numpy()) if data.numel() else memoryview(b"")
    while len(buf):
        n = os.pwrite(fd, buf, offset)
        buf = buf[n:]
        offset += n
