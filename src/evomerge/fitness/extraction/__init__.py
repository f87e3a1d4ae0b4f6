"""Choosing the reduced dataset: random, stratified, IRT-clustering and correctness-clustering
anchors. Seeded; the chosen items and weights are a ``Subset`` saved with the run. Each
extraction is one module here, registered in ``EXTRACTIONS`` under its config name."""

from evomerge.fitness.extraction.anchors import correctness_anchors, irt_anchors
from evomerge.fitness.extraction.base import EXTRACTIONS, Extraction, ExtractionInputs
from evomerge.fitness.extraction.stratified import stratified_subset
from evomerge.fitness.extraction.uniform import random_subset
from evomerge.fitness.subset import Subset

__all__ = ["EXTRACTIONS", "Extraction", "ExtractionInputs", "Subset", "correctness_anchors",
           "irt_anchors", "random_subset", "stratified_subset"]
