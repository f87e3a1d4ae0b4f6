"""Job configurations for ``evomerge evolve`` and ``evomerge np-merge`` (pydantic; YAML on
disk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evomerge.errors import ConfigError
from evomerge.io.text import load_yaml_file
from evomerge.recipe import format_validation_error


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


class SpaceConfig(_Strict):
    # lfs: per layer group a method from {linear, task_arithmetic, ties, slerp} and its
    # per-subset parameters (merge_method is then ignored)
    # dis: per depth position which models' layer runs there, in which order, and a scale
    # on its output (a stacked model; merge_method is then ignored)
    type: Literal["per_model", "layerwise", "lfs", "dis"] = "per_model"
    layer_granularity: int = 1
    modules: list[Literal["attention", "mlp", "other"]] = ["attention", "mlp", "other"]
    weight: tuple[float, float] = (0.0, 1.0)
    density: tuple[float, float] = (0.1, 1.0)
    t: tuple[float, float] = (0.0, 1.0)
    grid: float | None = Field(default=None, gt=0)
    parameters: dict[str, Any] = {}
    scale: tuple[float, float] = (0.0, 2.0)  # dis: output scale bounds
    repeat: int = Field(default=1, ge=1)  # dis: times each model's layer may appear
    max_depth: int | None = Field(default=None, ge=1)  # dis: default twice the base's depth

    @model_validator(mode="after")
    def _bounds(self) -> SpaceConfig:
        for name in ("weight", "density", "t"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} bounds [{lo}, {hi}] are reversed")
        for name in ("density", "t"):
            lo, hi = getattr(self, name)
            if lo < 0 or hi > 1:
                raise ValueError(f"{name} bounds [{lo}, {hi}] must lie within [0, 1]")
        return self


class TaskConfig(_Strict):
    """A benchmark: a zoo task (``zoo: add_it``), files (``search`` and ``test``), or an
    lm-eval task (``lm_eval: NAME`` or a task YAML path; extra ``[lm-eval]``)."""

    name: str
    zoo: str | None = None
    search: str | None = None
    test: str | None = None
    options: dict[str, Any] = {}
    fewshot_from: str | None = None  # a file of few-shot examples (same fields as the task)
    # lm-eval tasks: the task, extra task folders, few-shot count, the per-item metric
    # (default the task's first), and the split of its documents (see eval/lm_eval_tasks.py)
    lm_eval: str | None = None
    include_path: str | None = None
    num_fewshot: int | None = Field(default=None, ge=0)
    metric: str | None = None
    search_size: int | None = Field(default=None, ge=1)
    test_size: int | None = Field(default=None, ge=1)
    split_seed: int = 0

    @model_validator(mode="after")
    def _source(self) -> TaskConfig:
        given = [k for k in ("zoo", "search", "lm_eval") if getattr(self, k)]
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
    subset_size: int = Field(default=20, ge=1)
    extraction: Literal["random", "stratified", "irt_anchors", "correctness_anchors"] = "random"
    stratify_by: str | None = None
    estimator: Literal["mean", "weighted", "pirt", "gpirt", "mpirt", "gmpirt"] = "gmpirt"
    delta: float | Literal["auto"] = 0.5
    irt_kind: Literal["1pl", "2pl", "mirt"] = "mirt"
    irt_dims: int = Field(default=2, ge=1)
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


class OptimizerConfig(_Strict):
    name: Literal["ga", "de", "cmaes", "pso", "nsga2", "nsga3", "random", "smac"] = "ga"
    pop_size: int = Field(default=10, ge=2)
    generations: int = Field(default=5, ge=1)
    seed_endpoints: bool = True
    # stop once this many items were evaluated in the search (every optimizer)
    item_budget: int | None = Field(default=None, ge=1)
    # smac (multi-fidelity, Hyperband): the fidelity is a number of search items, from
    # min_items to max_items (default: 100 to 1000, scaled down to the task's search split)
    eta: int = Field(default=3, ge=2)
    min_items: int | None = Field(default=None, ge=1)
    max_items: int | None = Field(default=None, ge=1)
    trials: int | None = Field(default=None, ge=1)  # default pop_size * generations


class BackendConfig(_Strict):
    """Where candidates are evaluated: in the search process, or on Ray actors (one per
    worker slot, each holding the models once)."""

    name: Literal["local", "ray"] = "local"
    address: str | None = None  # an existing Ray cluster ("auto", "ray://host:10001"); None:
    # start a local one for the run
    workers: int = Field(default=2, ge=1)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=0.0, ge=0)


class EvolveConfig(_Strict):
    base_model: str
    models: list[str] = Field(min_length=1)
    merge_method: str = "task_arithmetic"
    space: SpaceConfig = SpaceConfig()
    tasks: list[TaskConfig] = Field(min_length=1)
    fitness: FitnessConfig = FitnessConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    seed: int = 0
    device: str = "cpu"
    # precision candidates are merged and evaluated in; bfloat16 halves memory and the
    # per-candidate update (as mergekit computes in a recipe's dtype)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    offload: bool = False  # keep inputs and task vectors in CPU memory, stream per tensor
    backend: BackendConfig = BackendConfig()
    batch_size: int = Field(default=64, ge=1)
    run_dir: str = "runs/evolve"
    write_best: bool = True
    test_top_k: int = Field(default=5, ge=1)

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

    def resolved(self, base_dir: Path) -> EvolveConfig:
        def fix(p: str | None) -> str | None:
            return _resolve(p, base_dir)

        data = self.model_dump()
        data["base_model"] = fix(self.base_model)
        data["models"] = [fix(m) for m in self.models]
        for t in data["tasks"]:
            t["search"], t["test"] = fix(t["search"]), fix(t["test"])
            t["include_path"] = fix(t["include_path"])
            t["fewshot_from"] = fix(t["fewshot_from"])
            if t["lm_eval"] and t["lm_eval"].endswith((".yaml", ".yml")):
                t["lm_eval"] = fix(t["lm_eval"])
        return EvolveConfig.model_validate(data)


class DataConfig(_Strict):
    """Items to learn from or test on: a zoo task's split, a task file (JSONL, CSV, Parquet
    or a local ``datasets`` directory; ``options`` go to the loader, as for evolve's tasks),
    or an lm-eval task's search or test documents (``lm_eval``, generative tasks only)."""

    zoo: str | None = None
    split: Literal["train", "search", "test"] = "train"
    file: str | None = None
    lm_eval: str | None = None
    include_path: str | None = None
    options: dict[str, Any] = {}
    limit: int | None = Field(default=None, ge=1)  # only the first N items
    ids: list[str] | None = None  # only these item ids (e.g. an evolve run's subset)

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if sum(x is not None for x in (self.zoo, self.file, self.lm_eval)) != 1:
            raise ValueError("give one of zoo (a zoo task name), file or lm_eval")
        if self.lm_eval and self.split == "train":
            raise ValueError("an lm_eval source has search and test documents: set split")
        return self


class NPMergeConfig(_Strict):
    """``evomerge np-merge``: learned per-parameter merging of causal LMs."""

    models: list[str] = Field(min_length=1)
    base_model: str | None = None  # needed by mode task_vectors
    data: DataConfig
    test: DataConfig | None = None
    steps: int = Field(default=100, ge=1)
    lr: float = Field(default=0.05, gt=0)
    batch_size: int = Field(default=32, ge=1)
    granularity: Literal["parameter", "row", "tensor"] = "parameter"
    mode: Literal["pairwise", "softmax", "task_vectors"] = "pairwise"
    seed: int = 0
    device: str = "cpu"
    output: str = "np-merged"

    @model_validator(mode="after")
    def _enough_models(self) -> NPMergeConfig:
        _check_device(self.device)
        dup = _first_duplicate(self.models)
        if dup is not None:
            raise ValueError(f"model {dup!r} is listed twice in models")
        if self.mode == "task_vectors" and self.base_model is None:
            raise ValueError("mode task_vectors needs base_model")
        if self.mode != "task_vectors" and len(self.models) < 2:
            raise ValueError(f"mode {self.mode} merges at least two models")
        return self

    def resolved(self, base_dir: Path) -> NPMergeConfig:
        data = self.model_dump()
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
    """A path as given when it exists from here or is absolute, else relative to the config
    file's directory when it exists there."""
    if p is None:
        return None
    path = Path(p).expanduser()
    if path.is_absolute() or path.exists():
        return str(path.resolve()) if path.exists() else str(path)
    cand = base_dir / path
    return str(cand.resolve()) if cand.exists() else p


def _read(source: str | Path | dict[str, Any]) -> tuple[dict[str, Any], Path]:
    if isinstance(source, dict):
        return source, Path.cwd()
    path = Path(source)
    data = load_yaml_file(path, "config file")
    if not isinstance(data, dict):
        raise ConfigError("config must be a YAML mapping")
    return data, path.resolve().parent


def _load(model: type[Any], source: str | Path | dict[str, Any]) -> Any:
    data, base_dir = _read(source)
    try:
        return model.model_validate(data).resolved(base_dir)
    except ValidationError as exc:
        raise ConfigError(f"invalid config: {format_validation_error(exc)}") from None


def load_np_merge_config(source: str | Path | dict[str, Any]) -> NPMergeConfig:
    return _load(NPMergeConfig, source)


def load_config(source: str | Path | dict[str, Any]) -> EvolveConfig:
    return _load(EvolveConfig, source)
