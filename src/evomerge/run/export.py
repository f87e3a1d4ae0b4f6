"""``evomerge export``: any candidate a run recorded, or any contender of its final table,
written as a checkpoint with its recipe, merged exactly as the search merged it (the run's
seed, dtype and tokenizer setting)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from evomerge.errors import ConfigError
from evomerge.recipe import MergeRecipe


def recipe_summary(recipe: dict[str, Any], digits: int = 3) -> str:
    """A recipe as one line of flow YAML with rounded numbers, for tables."""
    def rounded(obj: Any) -> Any:
        if isinstance(obj, float):
            return round(obj, digits)
        if isinstance(obj, dict):
            return {k: rounded(v) for k, v in obj.items() if k != "dtype"}
        if isinstance(obj, list):
            return [rounded(v) for v in obj]
        return obj

    slim = rounded(recipe)
    for m in slim.get("models") or []:  # model paths by their last component
        m["model"] = Path(m["model"]).name
    if slim.get("base_model"):
        slim["base_model"] = Path(slim["base_model"]).name
    return yaml.safe_dump(slim, default_flow_style=True, width=10_000).strip()


def find_recipe(run_dir: Path, candidate: str) -> tuple[MergeRecipe, str]:
    """The recipe a run recorded under ``candidate`` and its label."""
    from evomerge.run.finish import candidate_order
    from evomerge.run.store import RECORD_FILE, read_records

    record = run_dir / RECORD_FILE
    if not record.exists():
        raise ConfigError(f"{run_dir} is not a run directory (no {RECORD_FILE})")
    name = candidate.strip()
    result = run_dir / "result.json"
    final = json.loads(result.read_text()).get("final", []) if result.exists() else []
    if name == "best":
        chosen = next((f for f in final if f.get("chosen")), None)
        if chosen is None:
            raise ConfigError(f"{run_dir} has no final choice yet (the run has not finished); "
                              "export a candidate by id")
        return MergeRecipe.model_validate(chosen["recipe"]), chosen["label"]
    number = name.removeprefix("candidate").strip()
    if number.isdigit():
        records, _ = read_records(record)
        cands = candidate_order(records)
        i = int(number)
        if i >= len(cands):
            raise ConfigError(f"{run_dir} records candidates 0 to {len(cands) - 1}, not {i}")
        return MergeRecipe.model_validate(cands[i]["recipe"]), f"candidate {i}"
    match = next((f for f in final if f["label"] == name), None)
    if match is None:
        labels = ", ".join(repr(f["label"]) for f in final if f["role"] != "candidate")
        raise ConfigError(f"no candidate {name!r} in {run_dir} (give best, a candidate id"
                          + (f", or one of {labels}" if labels else "") + ")")
    return MergeRecipe.model_validate(match["recipe"]), name


def export_candidate(run_dir: str | Path, candidate: str, out: str | Path, *,
                     force: bool = False) -> tuple[Path, str]:
    from evomerge.config import load_config
    from evomerge.merge.disk import merge_to_disk

    run_dir = Path(run_dir)
    recipe, label = find_recipe(run_dir, candidate)
    cfg = load_config(run_dir / "config.yaml")
    if cfg.tokenizer_source is not None:
        recipe = recipe.model_copy(update={"tokenizer_source": cfg.tokenizer_source})
    path = merge_to_disk(recipe, out, seed=cfg.seed, dtype=cfg.dtype, out_dtype=cfg.dtype,
                         force=force, statistics_dir=run_dir / "statistics")
    return path, label
