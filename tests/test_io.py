"""Checkpoint reading (single, sharded, .bin) and atomic sharded writing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from evomerge.errors import EvomergeError, ModelError
from evomerge.io.checkpoint import Checkpoint
from evomerge.io.writer import CheckpointWriter, TensorSlot, parse_size

from .helpers import assert_same_tensors, load_model_tensors, run_evomerge


def test_sharded_and_bin_inputs_merge_like_single_files(llama: list[Path],
                                                        tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    base, ft1, ft2 = llama
    sharded = tmp_path / "ft1-sharded"
    AutoModelForCausalLM.from_pretrained(ft1).save_pretrained(sharded, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").exists()
    assert len(list(sharded.glob("*.safetensors"))) > 2
    binary = tmp_path / "ft2-bin"
    binary.mkdir()
    (binary / "config.json").write_text((ft2 / "config.json").read_text())
    torch.save(load_file(str(ft2 / "model.safetensors")), binary / "pytorch_model.bin")

    def recipe(a: Path, b: Path) -> dict:
        return {"merge_method": "ties", "base_model": str(base),
                "models": [{"model": str(a), "parameters": {"weight": 1.0, "density": 0.5}},
                           {"model": str(b), "parameters": {"weight": 0.5, "density": 0.5}}]}

    plain = run_evomerge(recipe(ft1, ft2), tmp_path / "plain")
    mixed = run_evomerge(recipe(sharded, binary), tmp_path / "mixed")
    assert_same_tensors(mixed, plain, rtol=0)


def test_checkpoint_reads_lazily_with_shapes_from_headers(llama: list[Path]) -> None:
    ckpt = Checkpoint(llama[0])
    name = "model.layers.0.mlp.up_proj.weight"
    assert ckpt.shape(name) == (64, 32)
    assert ckpt.dtype(name) == torch.float32
    assert torch.equal(ckpt.get(name), load_file(str(llama[0] / "model.safetensors"))[name])
    with pytest.raises(ModelError, match="tensor nope is missing"):
        ckpt.get("nope")


def test_truncated_file_is_a_one_line_model_error(llama: list[Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    data = (llama[1] / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated") as info:
        Checkpoint(broken)
    assert "\n" not in str(info.value)


def test_writer_shards_stream_and_load_back(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    tensors = {f"layers.{i}.w": torch.randn(64, 64, generator=gen) for i in range(6)}
    tensors["flag"] = torch.tensor([True, False])
    tensors["half"] = torch.randn(3, 5, generator=gen).to(torch.bfloat16)
    tensors["scalar"] = torch.tensor(3.5)
    slots = [TensorSlot(k, tuple(v.shape), v.dtype) for k, v in tensors.items()]
    out = tmp_path / "model"
    with CheckpointWriter(out, slots, max_shard_bytes=40_000) as w:
        for k in reversed(list(tensors)):  # any order
            w.write(k, tensors[k])
        w.commit()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(tensors)
    assert index["metadata"]["total_size"] == sum(s.nbytes for s in slots)
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) == 3 and shards[0].name == "model-00001-of-00003.safetensors"
    loaded = load_model_tensors(out)
    for k, v in tensors.items():
        assert torch.equal(loaded[k], v), k
    with safe_open(str(shards[0]), "pt") as f:
        assert f.metadata()["format"] == "pt"
    assert not list(tmp_path.glob(".model.*"))  # no temporary directory left behind


def test_writer_failure_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "model"
    slots = [TensorSlot("a", (4,), torch.float32), TensorSlot("b", (4,), torch.float32)]
    with pytest.raises(RuntimeError, match="boom"), CheckpointWriter(out, slots) as w:
        w.write("a", torch.zeros(4))
        raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_unless_forced_and_evomerges_own(tmp_path: Path) -> None:
    out = tmp_path / "model"
    slots = [TensorSlot("a", (2,), torch.float32)]
    with CheckpointWriter(out, slots) as w:
        w.write("a", torch.zeros(2))
        w.commit()
    with pytest.raises(EvomergeError, match="already exists"):
        CheckpointWriter(out, slots)
    with CheckpointWriter(out, slots, force=True) as w:
        w.write("a", torch.ones(2))
        w.commit()
    assert torch.equal(load_file(str(out / "model.safetensors"))["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    (out / "keep.txt").write_text("x")  # a file evomerge did not write: never deleted
    with pytest.raises(EvomergeError, match="keep.txt"):
        CheckpointWriter(out, slots, force=True)
    assert (out / "keep.txt").read_text() == "x"


@pytest.mark.parametrize("text, size", [("500MB", 500 * 1024**2), ("2GB", 2 * 1024**3),
                                        ("1.5G", int(1.5 * 1024**3)), ("1000", 1000)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size
