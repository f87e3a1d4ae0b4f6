"""Search spaces: a real vector within bounds <-> a merge recipe."""

from evomerge.spaces.base import SearchSpace
from evomerge.spaces.dis import DISSpace
from evomerge.spaces.layerwise import LayerwiseSpace
from evomerge.spaces.lfs import LFSSpace
from evomerge.spaces.per_model import PerModelSpace

SPACES = {"per_model": PerModelSpace, "layerwise": LayerwiseSpace, "lfs": LFSSpace,
          "dis": DISSpace}

__all__ = ["SPACES", "DISSpace", "LFSSpace", "LayerwiseSpace", "PerModelSpace", "SearchSpace"]
