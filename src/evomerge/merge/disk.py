"""Recipe -> checkpoint on disk: the engine behind ``evomerge merge``.

Everything that can be wrong with the inputs is checked before the first byte is written; the
output appears under its final name only when complete (see ``CheckpointWriter``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from evomerge.device import resolve_device
from evomerge.errors import ConfigError, ModelError
from evomerge.io.checkpoint import TensorSource
from evomerge.io.lora import input_dirs, open_model
from evomerge.io.writer import DEFAULT_SHARD_BYTES, CheckpointWriter, prepare_output
from evomerge.merge.planner import MergePlan, check_parameter_names, parse_dtype
from evomerge.merge.vocab import Vocabulary, tokenizer_files
from evomerge.recipe import MergeRecipe

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt",
                   "added_tokens.json", "chat_template.jinja", "chat_template.json",
                   "spiece.model")
RECIPE_FILE = "mergekit_config.yml"
Progress = Callable[[int, int], None]


def open_sources(recipe: MergeRecipe) -> dict[str, TensorSource]:
    """Checkpoints, PEFT adapter directories and ``BASE+ADAPTER`` references, opened lazily."""
    return {m: open_model(m) for m in recipe.referenced_models()}


def compute_dtype_for(recipe: MergeRecipe, override: str | torch.dtype | None) -> torch.dtype:
    """float32 unless asked otherwise (float64 recipes keep float64)."""
    if isinstance(override, torch.dtype):
        return override
    if override is not None:
        return parse_dtype(override, "compute dtype") or torch.float32
    return torch.float64 if parse_dtype(recipe.dtype) == torch.float64 else torch.float32


def merge_to_disk(recipe: MergeRecipe, out: str | Path, *, device: str = "cpu",
                  dtype: str | torch.dtype | None = None, out_dtype: str | None = None,
                  force: bool = False, seed: int = 0, shard_size: int = DEFAULT_SHARD_BYTES,
                  progress: Progress | None = None, allow_nonfinite: bool = False,
                  statistics_dir: Path | None = None,
                  log: Callable[[str], None] | None = None) -> Path:
    """Merge ``recipe`` into a Hugging Face checkpoint directory at ``out``.

    Everything is checked before any directory is written: the output (``force`` replaces
    only a directory evomerge wrote, never one holding an input), the device, every model
    and tensor, the tokenizer source and the free space. Data-dependent methods' statistics
    are computed once per model and data into ``statistics_dir`` (default: the user cache,
    ``merge.statistics.default_cache``) and reused."""
    check_parameter_names(recipe)  # a typo fails before anything is opened or written
    out = Path(out).resolve()
    tok_source = tokenizer_source(recipe)
    inputs = [part for m in recipe.referenced_models() for part in input_dirs(m)]
    inputs += [str(tok_source)] if tok_source else []
    prepare_output(out, force, inputs)
    dev = resolve_device(device)
    compute = compute_dtype_for(recipe, dtype)
    sources = open_sources(recipe)
    vocab = Vocabulary.for_recipe(recipe, sources)
    # the merged vocabulary's tokenizer or a chat template set: checked before writing
    tok_files = tokenizer_files(recipe, sources, vocab, tok_source)
    if vocab is not None:  # embedding and head rows aligned by token string
        sources = vocab.align(sources)
    from evomerge.merge.statistics import for_recipe

    statistics = for_recipe(recipe, statistics_dir, dev, log)
    plan = MergePlan.build(recipe, sources, seed=seed,
                           out_dtype=parse_dtype(out_dtype, "out_dtype"),
                           allow_nonfinite=allow_nonfinite, statistics=statistics)
    if plan.config is None:
        raise ModelError(f"model {plan.reference!r} has no config.json: the merged checkpoint "
                         "could not be loaded without one")
    total = len(plan.tasks)
    with CheckpointWriter(out, plan.slots(), force=force, max_shard_bytes=shard_size,
                          metadata={"merged_by": "evomerge"}, inputs=inputs) as writer:
        for done, (task, tensor) in enumerate(plan.tensors(dev, compute), start=1):
            writer.write(task.out.name, tensor)
            if progress is not None:
                progress(done, total)
        _write_metadata(writer, plan, sources, out.name, tok_source, tok_files)
        return writer.commit()


def tokenizer_source(recipe: MergeRecipe) -> Path | None:
    """The model directory a tokenizer comes from, when not the base (checked up front)."""
    source = recipe.tokenizer.source if recipe.tokenizer else recipe.tokenizer_source
    if source in (None, "base", "union"):
        return None
    path = Path(str(source))
    if not path.is_dir():
        key = "tokenizer.source" if recipe.tokenizer else "tokenizer_source"
        raise ConfigError(f"{key} {source!r} is not a directory (use base, union or a model "
                          "directory)")
    return path


def _write_metadata(writer: CheckpointWriter, plan: MergePlan, sources: dict[str, TensorSource],
                    out_name: str, tok_source: Path | None,
                    tok_files: dict[str, bytes] | None) -> None:
    recipe = plan.recipe
    reference: Any = sources[plan.reference]  # a Checkpoint or LoraSource: both have .path
    if plan.config is not None:
        config = dict(plan.config)
        out_dtype = {t.out.dtype for t in plan.tasks if t.out.dtype.is_floating_point}
        if len(out_dtype) == 1:
            key = "torch_dtype" if "torch_dtype" in config else "dtype"  # transformers < 5 / 5
            config[key] = str(next(iter(out_dtype))).removeprefix("torch.")
        writer.write_json("config.json", config)
    gen = reference.path / "generation_config.json"
    if gen.exists():
        writer.copy_file(gen)
    if tok_files is not None:
        for fname, data in tok_files.items():
            writer.write_bytes(fname, data)
    else:
        tok_source = tok_source or reference.path
        for fname in TOKENIZER_FILES:
            if (tok_source / fname).exists():
                writer.copy_file(tok_source / fname)
    writer.write_text(RECIPE_FILE, recipe.to_yaml())
    writer.write_text("README.md", model_card(recipe, out_name))


def model_card(recipe: MergeRecipe, name: str) -> str:
    models = "\n".join(f"- `{m}`" for m in recipe.referenced_models())
    base = f"`{recipe.base_model}`" if recipe.base_model else "none"
    return (
        "---\ntags:\n- merge\n- evomerge\nlibrary_name: transformers\n---\n"
        f"# {name}\n\n"
        f"This model was merged with [evomerge](https://pypi.org/project/evomerge/) using the "
        f"**{recipe.merge_method}** method.\n\n"
        f"Base model: {base}\n\nModels merged:\n\n{models}\n\n"
        "## Recipe\n\nThe recipe below (also saved as `mergekit_config.yml`) reproduces this "
        "model with `evomerge merge` or `mergekit-yaml`:\n\n"
        f"```yaml\n{recipe.to_yaml()}```\n"
    )


