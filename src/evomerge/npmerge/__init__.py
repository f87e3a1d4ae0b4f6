"""Gradient-learned merging (NP Merge) and neuron alignment (weight matching)."""

from evomerge.npmerge.align import (
    PermutationSpec,
    align,
    apply_permutation,
    sequential_spec,
    weight_matching,
)
from evomerge.npmerge.learn import (
    NPMergeResult,
    classification_loss,
    lm_loss,
    np_merge_modules,
)

__all__ = ["NPMergeResult", "PermutationSpec", "align", "apply_permutation",
           "classification_loss", "lm_loss", "np_merge_modules", "sequential_spec",
           "weight_matching"]
