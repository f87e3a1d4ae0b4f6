"""``evomerge init``: a commented starting config for the user's own models and tasks, every
value a sensible default and every line saying what it changes (docs/config.md has all)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from evomerge.errors import ConfigError
from evomerge.io.lora import input_dirs

TEMPLATE = """\
# evomerge evolve config, written by `evomerge init`; every key: docs/config.md
base_model: {base}
models:                       # checkpoints, LoRA adapters or base+adapter
{models}
merge_method: task_arithmetic # ties, dare_ties, slerp (2 models), ...: `evomerge methods`
# tokenizer_source: union     # when the models' vocabularies differ (added tokens)
space:
  type: per_model             # per_model | layerwise | lfs | dis (docs/search.md)
  weight: [0.0, 1.5]          # bounds of each model's weight gene
tasks:                        # one objective per task (docs/tasks.md)
{tasks}
fitness:
  subset_size: 20             # items per candidate; more: slower and more exact
  estimator: gmpirt           # mean | pirt | gpirt | mpirt | gmpirt (docs/estimators.md)
  calibration_merges: 8       # random merges scored in full to fit the IRT model
optimizer:
  name: ga                    # ga | de | cmaes | pso | nsga2 | nsga3 | random | smac
  pop_size: 10
  generations: 6
  # patience: 3               # stop early after 3 generations without a better best
final:
  top_k: 8                    # re-scored on the whole search split beside the baselines
{device_line}# cpu | cuda | cuda:N
{dtype_line}# bfloat16 halves memory (the plan is printed at the start)
# offload: true               # keep inputs and task vectors on the host (small GPUs)
batch_size: 32
run_dir: {run_dir}
seed: 0
"""


def task_entry(spec: str) -> dict[str, Any]:
    """``NAME=SEARCH[,TEST]`` (files), ``NAME=lm_eval:TASK`` or a zoo task name."""
    if "=" not in spec:
        return {"name": spec, "zoo": spec}
    name, value = spec.split("=", 1)
    if value.startswith("lm_eval:"):
        return {"name": name, "lm_eval": value.removeprefix("lm_eval:")}
    search, _, test = value.partition(",")
    if not test:
        raise ConfigError(f"task {spec!r}: give NAME=SEARCH_FILE,TEST_FILE (a held-out test "
                          "file scores the answer), NAME=lm_eval:TASK or a zoo task name")
    for f in (search, test):
        if not Path(f).exists():
            raise ConfigError(f"task {name}: {f} does not exist")
    entry: dict[str, Any] = {"name": name, "search": search, "test": test}
    options = sniff_fields(name, search)
    if options:
        entry["options"] = options
    return entry


# the names datasets commonly give a record's parts, most usual first
FIELD_NAMES = {
    "prompt_field": ("prompt", "question", "input", "instruction", "query", "problem",
                     "source", "text", "context"),
    "answer_field": ("answer", "completion", "output", "response", "target", "label",
                     "solution", "gold", "reference"),
    "choices_field": ("choices", "options", "endings"),
    "id_field": ("id", "idx", "uid", "question_id", "doc_id"),
}


def sniff_fields(name: str, path: str) -> dict[str, str]:
    """The field mapping a task file needs (``answer_field: completion`` for the
    prompt/completion format, ...), read from its first record; nothing when the defaults
    fit. A file whose prompt or answer cannot be recognised is one line naming its
    fields."""
    from evomerge.eval.tasks import _read_records

    first = next(iter(_read_records(Path(path))), None)
    if not isinstance(first, dict):
        raise ConfigError(f"task {name}: {path} has no records")
    fields = list(first)
    options: dict[str, str] = {}
    for option, names in FIELD_NAMES.items():
        found = next((n for n in names if n in first), None)
        if found is None:
            if option in ("prompt_field", "answer_field"):
                raise ConfigError(
                    f"task {name}: cannot tell which field of {path} is the "
                    f"{option.split('_')[0]} (its fields: {', '.join(fields)}); write the "
                    "task entry with options {prompt_field: ..., answer_field: ...}")
            continue
        if found != option.removesuffix("_field") and found != "id":
            options[option] = found
    return options


def init_config(base: str, models: list[str], tasks: list[str], out: Path,
                run_dir: str | None = None, device: str = "cpu") -> Path:
    """Write the starting config to ``out`` (never over an existing file) after checking
    that it loads."""
    from evomerge.config import load_config

    if out.exists():
        raise ConfigError(f"{out} exists; choose another path (-o) or remove it yourself")
    if not models:
        raise ConfigError("give the models to merge (--model PATH, once per model)")
    if not tasks:
        raise ConfigError("give at least one task (--task NAME=SEARCH,TEST, "
                          "NAME=lm_eval:TASK or a zoo task name)")
    entries = [task_entry(t) for t in tasks]

    for m in [base, *models]:
        if not all(Path(d).is_dir() for d in input_dirs(m)):
            raise ConfigError(f"model {m!r} is not a directory (a checkpoint, a LoRA adapter "
                              "or BASE+ADAPTER)")

    def flow(obj: object) -> str:
        if isinstance(obj, str):
            return json.dumps(obj)  # a JSON string is a YAML scalar, quoted when needed
        return yaml.safe_dump(obj, default_flow_style=True, width=1000).strip()

    text = TEMPLATE.format(
        base=flow(base), models="\n".join(f"  - {flow(m)}" for m in models),
        tasks="\n".join(f"  - {flow(e)}" for e in entries),
        device_line=f"device: {device}".ljust(30),
        dtype_line=f"dtype: {'float32' if device == 'cpu' else 'bfloat16'}".ljust(30),
        run_dir=flow(run_dir or f"runs/{out.stem}"))
    load_config(yaml.safe_load(text))  # what we write must load
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out
