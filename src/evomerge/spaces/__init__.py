"""Search spaces: a real vector within bounds <-> a merge recipe. Each space is one module
registered in ``SPACES`` under its config ``type``."""

from evomerge.spaces.base import SPACES, Gene, SearchSpace, SpaceInputs, build_space
from evomerge.spaces.dis import DISSpace
from evomerge.spaces.layerwise import LayerwiseSpace
from evomerge.spaces.lfs import LFSSpace
from evomerge.spaces.per_model import PerModelSpace

__all__ = ["SPACES", "DISSpace", "Gene", "LFSSpace", "LayerwiseSpace", "PerModelSpace",
           "SearchSpace", "SpaceInputs", "build_space"]
