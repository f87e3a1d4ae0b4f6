"""evomerge: automated model merging.

Public API (the CLI says the same things with the same names)::

    from evomerge import load_recipe, merge
    merge(load_recipe("recipe.yaml"), "out/merged")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evomerge.errors import ConfigError, EvomergeError, ModelError
from evomerge.merge import MergePlan, merge_to_disk
from evomerge.recipe import MergeRecipe, load_recipe

__version__ = "0.1.0"


def merge(recipe: MergeRecipe | str | Path | dict[str, Any], out: str | Path, **options: Any
          ) -> Path:
    """Merge a recipe (object, YAML path or dict) into a checkpoint at ``out``.

    Options match ``evomerge merge``: device, dtype, out_dtype, force, seed, shard_size,
    allow_nonfinite.
    """
    if not isinstance(recipe, MergeRecipe):
        recipe = load_recipe(recipe)
    return merge_to_disk(recipe, out, **options)


def evolve(config: Any, *, resume: bool = False, fresh: bool = False) -> Any:
    """Run (or resume, or start afresh) a recipe search; ``config`` is an ``EvolveConfig``, a
    YAML path or a dict (same fields as ``evomerge evolve``). Returns an ``EvolveResult``."""
    from evomerge.config import EvolveConfig, load_config
    from evomerge.run.loop import evolve as run

    if not isinstance(config, EvolveConfig):
        config = load_config(config)
    return run(config, resume=resume, fresh=fresh)


def np_merge(config: Any, *, force: bool = False) -> Any:
    """Learned per-parameter merging of causal LMs; ``config`` is an ``NPMergeConfig``, a
    YAML path or a dict (same fields as ``evomerge np-merge``). Returns an
    ``NPMergeJobResult``. For any ``torch.nn.Module``, see ``evomerge.npmerge``."""
    from evomerge.config import NPMergeConfig, load_np_merge_config
    from evomerge.npmerge.job import np_merge as run

    if not isinstance(config, NPMergeConfig):
        config = load_np_merge_config(config)
    return run(config, force=force)


def eval_models(paths: Any, tasks: Any, **options: Any) -> Any:
    """Score models, adapters or recipes on tasks (``evomerge eval``; the package
    ``evomerge.eval`` holds the evaluator): ``tasks`` is a tasks YAML path (a list of task
    entries, or an evolve config) or a list of ``TaskConfig``. Options: split, device, dtype,
    batch_size, seed. Returns an ``EvalReport`` (``.to_json()``)."""
    from evomerge.config import load_tasks
    from evomerge.eval.job import eval_models as run

    if isinstance(tasks, (str, Path)):
        tasks = load_tasks(tasks).tasks
    return run([str(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)],
               tasks, **options)


__all__ = [
    "eval_models",
    "evolve",
    "np_merge",
    "ConfigError",
    "EvomergeError",
    "MergePlan",
    "MergeRecipe",
    "ModelError",
    "load_recipe",
    "merge",
    "merge_to_disk",
]
