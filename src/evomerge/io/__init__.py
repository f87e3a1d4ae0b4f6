"""Checkpoint I/O: lazy reading, tensor naming, atomic sharded writing."""

from evomerge.io.checkpoint import Checkpoint, TensorDictSource, TensorSource
from evomerge.io.naming import TensorInfo, classify, num_layers_of
from evomerge.io.writer import CheckpointWriter

__all__ = [
    "Checkpoint",
    "CheckpointWriter",
    "TensorDictSource",
    "TensorInfo",
    "TensorSource",
    "classify",
    "num_layers_of",
]
