"""The merge engine: methods (registry), parameter resolution, planner, disk output."""

from evomerge.merge.disk import merge_to_disk
from evomerge.merge.planner import MergePlan, TensorTask
from evomerge.merge.registry import MergeMethod, Param, get_method, merge_method, methods

__all__ = [
    "MergeMethod",
    "MergePlan",
    "Param",
    "TensorTask",
    "get_method",
    "merge_method",
    "merge_to_disk",
    "methods",
]
