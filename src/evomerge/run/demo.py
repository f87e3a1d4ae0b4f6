"""The built-in offline demo: a cross-lingual merge (MERGE3's setting in miniature)."""

from __future__ import annotations

from pathlib import Path

from evomerge.config import EvolveConfig
from evomerge.zoo.manifest import MANIFEST, ZOO_DIR, verify


def demo_config(run_dir: Path, zoo: Path = ZOO_DIR) -> EvolveConfig:
    """Evolve task-arithmetic weights of the English math expert and the Italian language
    expert for arithmetic asked in Italian. Fitness = accuracy on the whole 240-item search
    split: on this zoo an evaluation costs milliseconds, and the MERGE3 table
    (docs/estimators.md) shows it gives the best final merge (about 16 s in all); the final
    choice re-scores the top 8 with the input models and hand-set baselines."""
    if not (zoo / MANIFEST).exists():  # only a source checkout without the committed zoo
        from evomerge.zoo.build import build_zoo

        build_zoo(zoo)
    verify(zoo)
    return EvolveConfig.model_validate({
        "base_model": str(zoo / "base"),
        "models": [str(zoo / "math_en"), str(zoo / "lang_it")],
        "merge_method": "task_arithmetic",
        "space": {"type": "per_model", "weight": [0.0, 2.0]},
        "tasks": [{"name": "add_it", "zoo": "add_it"}],
        "fitness": {"subset_size": 240, "estimator": "mean", "calibration_merges": 0},
        "optimizer": {"name": "ga", "pop_size": 16, "generations": 8},
        "final": {"top_k": 8},
        "seed": 0,
        "run_dir": str(run_dir),
    })
