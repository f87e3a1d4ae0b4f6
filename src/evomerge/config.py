"""Job configurations for ``evomerge evolve`` and ``evomerge np-merge`` (pydantic; YAML on
disk)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    model_validator,
)

from evomerge.errors import ConfigError
from evomerge.io.paths import resolve_relative
from evomerge.io.text import load_yaml_file
from evomerge.recipe import format_validation_error
from evomerge.registry import ComponentOptions


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _check_device(device: str) -> str:
    """The syntax of a device name (whether CUDA is there is checked when the job starts)."""
    from evomerge.device import parse_device

    try:
        parse_device(device)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return device


def _first_duplicate(values: list[str]) -> str | None:
    return next((v for v in values if values.count(v) > 1), None)


def _component(kind: str, key: str, default: str) -> Any:
    """A config block validated by the options model of the component it names (its
    ``key`` field, ``default`` when absent), looked up in the kind's registry; what the
    component does not declare is refused, with the closest option it does."""
    def validate(value: Any) -> Any:
        if isinstance(value, ComponentOptions):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{kind} must be a mapping with a {key!r} key")
        name = value.get(key, default)
        try:
            cls = _registry(kind).get(name)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return cls.Options.model_validate({**value, key: name})

    def options_of(value: Any) -> type[BaseModel] | None:
        """The options model a block of this kind validates with (for suggestions)."""
        name = value.get(key, default) if isinstance(value, dict) else default
        try:
            return _registry(kind).get(name).Options
        except ConfigError:
            return None

    validate.options_of = options_of  # type: ignore[attr-defined]
    return Annotated[SerializeAsAny[ComponentOptions], BeforeValidator(validate),
                     Field(default_factory=lambda: validate({}))]


def _registry(kind: str) -> Any:
    """The registry of a component kind, imported when first needed (the components import
    this module's neighbours)."""
    from evomerge.fitness.estimators import ESTIMATORS
    from evomerge.fitness.extraction import EXTRACTIONS
    from evomerge.optim.base import OPTIMIZERS
    from evomerge.run.backends.base import BACKENDS
    from evomerge.spaces.base import SPACES

    return {"space": SPACES, "optimizer": OPTIMIZERS, "backend": BACKENDS,
            "estimator": ESTIMATORS, "extraction": EXTRACTIONS}[kind]


def _registered(kind: str, name: str) -> str:
    try:
        _registry(kind).get(name)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return name


class TaskConfig(_Strict):
    """A benchmark: a zoo task (``zoo: add_it``), files (``search`` and ``test``), or an
    lm-eval task (``lm_eval: NAME`` or a task YAML path; extra ``[lm-eval]``)."""

    name: str  # the objective's name in records, reports and plots
    zoo: str | None = None  # a task of the demo zoo (add_it, ...)
    search: str | None = None  # JSONL/CSV/parquet file or datasets directory searched on
    test: str | None = None  # the held-out file the report's test column uses
    options: dict[str, Any] = {}  # file tasks: field names, generation, few-shot, chat
    fewshot_from: str | None = None  # a file of few-shot examples (same fields as the task)
    # lm-eval tasks (eval/lm_eval_tasks.py): the task, extra task folders, few-shot count,
    # the per-item metric, and the split of its documents
    lm_eval: str | None = None  # an lm-eval task name or task YAML path (extra [lm-eval])
    include_path: str | None = None  # a folder of extra lm-eval task YAML
    num_fewshot: int | None = Field(default=None, ge=0)  # lm-eval's few-shot count
    metric: str | None = None  # the per-item metric (default: the task's first)
    # lm-eval tasks without validation and test docs: a seeded disjoint split of one set
    search_size: int | None = Field(default=None, ge=1)  # lm-eval: search docs of that split
    test_size: int | None = Field(default=None, ge=1)  # lm-eval: test docs of that split
    split_seed: int = 0  # lm-eval: seed of that split

    @model_validator(mode="after")
    def _source(self) -> TaskConfig:
        from evomerge.eval.sources.base import source_keys

        given = [k for k in source_keys() if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"task {self.name}: give one of zoo, search (+ test) files or "
                             "lm_eval")
        lm_only = [k for k in ("include_path", "num_fewshot", "metric", "search_size",
                               "test_size") if getattr(self, k) is not None]
        if lm_only and not self.lm_eval:
            raise ValueError(f"task {self.name}: {lm_only[0]} applies to lm_eval tasks only")
        if self.lm_eval and (self.options or self.fewshot_from):
            raise ValueError(f"task {self.name}: options apply to file tasks; an lm_eval task "
                             "takes its prompts and generation settings from its YAML")
        return self


class FitnessConfig(_Strict):
    subset_size: int = Field(default=20, ge=1)  # items each candidate is evaluated on
    # names in fitness.extraction.EXTRACTIONS and fitness.estimators.ESTIMATORS; extraction
    # "auto": IRT anchors when the estimator fits an IRT model anyway, else random items
    # (the MERGE3 table in docs/estimators.md: anchors beat random items for the IRT
    # estimator on 20 items)
    extraction: Annotated[str, AfterValidator(
        lambda v: v if v == "auto" else _registered("extraction", v))] = "auto"
    stratify_by: str | None = None  # the item metadata field of stratified extraction
    # the full-split accuracy estimated from the subset's answers (docs/estimators.md)
    estimator: Annotated[str, AfterValidator(lambda v: _registered("estimator", v))] = "gmpirt"
    delta: float | Literal["auto"] = 0.5  # mp-IRT's mixing weight (auto: fitted)
    irt_kind: Literal["1pl", "2pl", "mirt"] = "mirt"  # the IRT model fitted for estimators
    irt_dims: int = Field(default=2, ge=1)  # ability dimensions of the mirt model
    # random merges evaluated on the whole search split to fit the IRT model
    calibration_merges: int = Field(default=8, ge=0)
    # p-IRT / gp-IRT: standard deviation of the N(0, sd^2) prior on a candidate's ability.
    # 1.0 (the IRT fit's own prior) keeps 20-item abilities finite when a candidate answers
    # all or none right; "none" is plain maximum likelihood, as tinyBenchmarks computes it
    ability_prior: float | Literal["none"] = Field(default=1.0)
    # extra calibration rows per task: a models x items 0/1 matrix (.npy or .csv, NaN for
    # missing) over the task's search items, e.g. full evaluations you already have
    responses: dict[str, str] = {}

    @model_validator(mode="after")
    def _positive_prior(self) -> FitnessConfig:
        if self.ability_prior != "none" and self.ability_prior <= 0:
            raise ValueError("ability_prior must be a positive standard deviation or none")
        return self


class FinalConfig(_Strict):
    """The final choice (run/finish.py): the ``top_k`` candidates by estimate (and the Pareto
    set) are re-scored on the whole search split with the input models and, with
    ``baselines``, the hand-set recipes; the best on those validation items is the answer."""

    top_k: int = Field(default=8, ge=1)  # candidates re-scored on the whole search split
    baselines: bool = True  # also the hand-set recipes (task arithmetic, TIES, ...)
    # several tasks: the Pareto set re-scored beside them, identical score vectors once, at
    # most this many (each task's best, then the most spread out by crowding distance)
    pareto_max: int = Field(default=8, ge=1)


class DataConfig(_Strict):
    """Items to learn from or test on: a zoo task's split, a task file (JSONL, CSV, Parquet
    or a local ``datasets`` directory; ``options`` go to the loader, as for evolve's tasks),
    or an lm-eval task's search or test documents (``lm_eval``, generative tasks only)."""

    zoo: str | None = None  # a zoo task
    split: Literal["train", "search", "test"] = "train"  # its split (lm_eval: search or test)
    file: str | None = None  # a task file or datasets directory
    lm_eval: str | None = None  # an lm-eval task name or task YAML (generative)
    include_path: str | None = None  # a folder of extra lm-eval task YAML
    options: dict[str, Any] = {}  # loader options, as for evolve's file tasks
    limit: int | None = Field(default=None, ge=1)  # only the first N items
    ids: list[str] | None = None  # only these item ids (e.g. an evolve run's subset)

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if sum(x is not None for x in (self.zoo, self.file, self.lm_eval)) != 1:
            raise ValueError("give one of zoo (a zoo task name), file or lm_eval")
        if self.lm_eval and self.split == "train":
            raise ValueError("an lm_eval source has search and test documents: set split")
        return self


class EvolveConfig(_Strict):
    base_model: str  # a checkpoint directory: the merge's base, its config and tokenizer
    # checkpoints, PEFT LoRA adapters or base+adapter references, merged with the base
    models: list[str] = Field(min_length=1)
    merge_method: str = "task_arithmetic"  # any method of `evomerge methods`
    # what a genome sets: per-model or layer-wise parameters, methods per layer group (lfs),
    # layer stacking (dis); its options are below
    space: _component("space", "type", "per_model")  # type: ignore[valid-type]
    tasks: list[TaskConfig] = Field(min_length=1)  # one objective each
    fitness: FitnessConfig = FitnessConfig()  # how a candidate is scored cheaply
    # pymoo's algorithms, random search or SMAC3; its options are below
    optimizer: _component("optimizer", "name", "ga")  # type: ignore[valid-type]
    seed: int = 0  # seeds the optimizer, the extraction and stochastic merge methods
    device: str = "cpu"  # cpu, cuda or cuda:N
    # precision candidates are merged and evaluated in; bfloat16 halves memory and the
    # per-candidate update (as mergekit computes in a recipe's dtype)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    offload: bool = False  # keep inputs and task vectors in CPU memory, stream per tensor
    # models whose vocabularies differ (a chat fine-tune that added tokens): base, union or a
    # model directory, as in recipes (merge/vocab.py); every candidate and best/ use it
    tokenizer_source: str | None = None
    # refuse, before loading anything, a search whose memory plan does not fit (memory.py)
    memory_check: bool = True
    # where candidates are evaluated: this process, or Ray actors; options below
    backend: _component("backend", "name", "local")  # type: ignore[valid-type]
    # evaluation items per forward pass; auto: the largest the memory plan fits (at most
    # 256), and on CUDA any batch that still runs out of memory is halved and retried
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = 64
    run_dir: str = "runs/evolve"  # the record, report, plots and best/ (resumable)
    write_best: bool = True  # write the answer as a checkpoint in run_dir/best
    final: FinalConfig = FinalConfig()  # the honest final choice
    test_top_k: int = Field(default=5, ge=1)  # validated candidates also tested (held-out)
    # data-dependent methods (regmean, fisher): the items their statistics come from, as
    # np-merge's data block; computed once per model into run_dir/statistics
    data: DataConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> EvolveConfig:
        _check_device(self.device)
        dup = _first_duplicate([t.name for t in self.tasks])
        if dup is not None:
            raise ValueError(f"two tasks are named {dup!r}; task names must differ")
        dup = _first_duplicate(self.models)
        if dup is not None:
            raise ValueError(f"model {dup!r} is listed twice in models")
        return self

    def statistics_data(self) -> dict[str, Any] | None:
        """The ``data:`` block as recipes carry it (only the options set)."""
        return self.data.model_dump(exclude_defaults=True) if self.data else None

    def resolved(self, base_dir: Path) -> EvolveConfig:
        def fix(p: str | None) -> str | None:
            return _resolve(p, base_dir)

        data = self.model_dump()
        data["base_model"] = fix(self.base_model)
        data["models"] = [fix(m) for m in self.models]
        if self.tokenizer_source not in (None, "base", "union"):
            data["tokenizer_source"] = fix(self.tokenizer_source)
        if data["data"] is not None:
            data["data"]["file"] = fix(data["data"]["file"])
            data["data"]["include_path"] = fix(data["data"]["include_path"])
        for t in data["tasks"]:
            _resolve_task(t, base_dir)
        return EvolveConfig.model_validate(data)


def _resolve_task(t: dict[str, Any], base_dir: Path) -> None:
    """A task entry's paths, relative to the file that names them."""
    for key in ("search", "test", "include_path", "fewshot_from"):
        t[key] = _resolve(t[key], base_dir)
    if t["lm_eval"] and t["lm_eval"].endswith((".yaml", ".yml")):
        t["lm_eval"] = _resolve(t["lm_eval"], base_dir)


class TasksConfig(_Strict):
    """``evomerge eval --tasks``: task entries as in an evolve config's ``tasks:`` (a list,
    a mapping with ``tasks:``, or an evolve config itself, whose other keys are ignored)."""

    tasks: list[TaskConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> TasksConfig:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task name {next(n for n in names if names.count(n) > 1)!r} "
                             "appears twice")
        return self

    def resolved(self, base_dir: Path) -> TasksConfig:
        data = self.model_dump()
        for t in data["tasks"]:
            _resolve_task(t, base_dir)
        return TasksConfig.model_validate(data)


def load_tasks(path: str | Path) -> TasksConfig:
    data = load_yaml_file(Path(path), "tasks file")
    if isinstance(data, dict) and "tasks" in data:
        data = {"tasks": data["tasks"]}
    elif isinstance(data, list):
        data = {"tasks": data}
    else:
        raise ConfigError(f"tasks file {path}: expected a list of tasks or a mapping with "
                          "tasks: (an evolve config works too)")
    return _load(TasksConfig, (data, Path(path).resolve().parent))


class NPMergeConfig(_Strict):
    """``evomerge np-merge``: learned per-parameter merging of causal LMs."""

    models: list[str] = Field(min_length=1)  # full checkpoints (the first is the module)
    base_model: str | None = None  # needed by modes task_vectors and adamerging
    data: DataConfig  # the items the coefficients are learned on
    test: DataConfig | None = None  # held-out items: inputs and merge scored at the end
    steps: int = Field(default=100, ge=1)  # optimiser steps (per pair in pairwise mode)
    lr: float = Field(default=0.05, gt=0)  # Adam's learning rate on the coefficient logits
    batch_size: int = Field(default=32, ge=1)  # items per step
    # one coefficient per parameter, per output row, per tensor, or per model (task-vector
    # modes); default: parameter, and tensor (layer-wise) for adamerging
    granularity: Literal["parameter", "row", "tensor", "model"] | None = None
    # pairwise interpolation in turn, a joint softmax, scales of the task vectors learned on
    # the answers, or AdaMerging: scales learned without labels (prediction entropy)
    mode: Literal["pairwise", "softmax", "task_vectors", "adamerging"] = "pairwise"
    init: float | None = None  # task-vector scales' start (task_vectors 1, adamerging 0.3)
    seed: int = 0  # batch order and initialisation
    device: str = "cpu"  # cpu, cuda or cuda:N
    output: str = "np-merged"  # the merged checkpoint's directory
    tokenizer_source: str | None = None  # base, union or a model (vocabularies that differ)
    memory_check: bool = True  # refuse a job whose memory plan does not fit (memory.py)
    # held-out items the merge is checked on: these, or (null) this fraction of data's
    # items, drawn with the seed and never trained on; 0 turns validation off
    validation: DataConfig | None = None
    validation_fraction: float = Field(default=0.2, ge=0, lt=1)  # see validation
    eval_every: int = Field(default=10, ge=1)  # steps between validation checks
    # stop after this many checks without a lower validation loss (null: never); the
    # coefficients of the lowest are kept either way
    patience: int | None = Field(default=5, ge=1)

    @model_validator(mode="after")
    def _enough_models(self) -> NPMergeConfig:
        _check_device(self.device)
        dup = _first_duplicate(self.models)
        if dup is not None:
            raise ValueError(f"model {dup!r} is listed twice in models")
        vectors = self.mode in ("task_vectors", "adamerging")
        if vectors and self.base_model is None:
            raise ValueError(f"mode {self.mode} needs base_model")
        if not vectors and len(self.models) < 2:
            raise ValueError(f"mode {self.mode} merges at least two models")
        if self.granularity == "model" and not vectors:
            raise ValueError("granularity model (one coefficient per model) needs mode "
                             "task_vectors or adamerging")
        if self.init is not None and not vectors:
            raise ValueError("init sets the task-vector scales' start (modes task_vectors "
                             "and adamerging)")
        if self.granularity is None:
            self.granularity = "tensor" if self.mode == "adamerging" else "parameter"
        return self

    def resolved(self, base_dir: Path) -> NPMergeConfig:
        data = self.model_dump()
        if self.tokenizer_source not in (None, "base", "union"):
            data["tokenizer_source"] = _resolve(self.tokenizer_source, base_dir)
        data["models"] = [_resolve(m, base_dir) for m in self.models]
        data["base_model"] = _resolve(self.base_model, base_dir)
        for key in ("data", "test"):
            if data[key] is not None:
                data[key]["file"] = _resolve(data[key]["file"], base_dir)
                data[key]["include_path"] = _resolve(data[key]["include_path"], base_dir)
                lm = data[key]["lm_eval"]
                if lm and lm.endswith((".yaml", ".yml")):
                    data[key]["lm_eval"] = _resolve(lm, base_dir)
        return NPMergeConfig.model_validate(data)


def _resolve(p: str | None, base_dir: Path) -> str | None:
    return None if p is None else resolve_relative(p, base_dir)


def _read(source: str | Path | dict[str, Any] | tuple[dict[str, Any], Path]
          ) -> tuple[dict[str, Any], Path]:
    if isinstance(source, tuple):  # data already read, and the folder its paths are in
        return source
    if isinstance(source, dict):
        return source, Path.cwd()
    path = Path(source)
    data = load_yaml_file(path, "config file")
    if not isinstance(data, dict):
        raise ConfigError("config must be a YAML mapping")
    return data, path.resolve().parent


def _load(model: type[Any], source: str | Path | dict[str, Any] | tuple[dict[str, Any], Path]
          ) -> Any:
    data, base_dir = _read(source)
    try:
        return model.model_validate(data).resolved(base_dir)
    except ValidationError as exc:
        raise ConfigError(f"invalid config: {format_validation_error(exc)}"
                          f"{key_suggestion(model, exc, data)}") from None


def key_suggestion(model: type[BaseModel], exc: ValidationError, data: Any) -> str:
    """For an unknown key (the first error): the closest key that is allowed there."""
    import difflib
    import typing

    err = exc.errors()[0]
    if err.get("type") != "extra_forbidden":
        return ""
    loc = [p for p in err.get("loc", ()) if not str(p).startswith("function-")]
    cls: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            data = data[part] if isinstance(data, list) and part < len(data) else None
            continue
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return ""
        data = data.get(part) if isinstance(data, dict) else None
        finder = next((getattr(m.func, "options_of", None) for m in field.metadata
                       if hasattr(m, "func")), None)
        if finder is not None:
            cls = finder(data)
        else:
            ann = field.annotation
            args = [a for a in typing.get_args(ann) if isinstance(a, type)]
            cls = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else next(
                (a for a in args if issubclass(a, BaseModel)), None)
        if cls is None:
            return ""
    known = list(getattr(cls, "model_fields", {}))
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(known)})"


def load_np_merge_config(source: str | Path | dict[str, Any]) -> NPMergeConfig:
    return _load(NPMergeConfig, source)


def load_config(source: str | Path | dict[str, Any]) -> EvolveConfig:
    return _load(EvolveConfig, source)
