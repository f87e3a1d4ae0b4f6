"""The extraction contract: how a run picks its reduced dataset (a ``Subset``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from evomerge.errors import ConfigError
from evomerge.fitness.irt import IRTModel
from evomerge.fitness.subset import Subset
from evomerge.registry import Registry


@dataclass(frozen=True)
class ExtractionInputs:
    """What an extraction may use: the task's size, each item's stratum (the value of
    ``fitness.stratify_by``), the IRT model and the calibration responses."""

    total: int
    strata: list[Any] | None = None
    irt: IRTModel | None = None
    responses: np.ndarray | None = None  # calibration rows: models x items, 0/1 (NaN missing)


class Extraction(ABC):
    """``extract(inputs, n, seed) -> Subset``. ``needs_calibration``: the run evaluates the
    endpoints and random merges on the whole search split first (for ``irt`` and
    ``responses``); ``needs_strata``: it needs ``fitness.stratify_by``."""

    needs_calibration: ClassVar[bool] = False
    needs_strata: ClassVar[bool] = False

    @abstractmethod
    def extract(self, inputs: ExtractionInputs, n: int, seed: int) -> Subset: ...


EXTRACTIONS: Registry[type[Extraction]] = Registry("extraction", "evomerge.fitness.extraction")


def check_size(n: int, total: int) -> None:
    if not 0 < n <= total:
        raise ConfigError(f"subset size {n} must be between 1 and the {total} items")
