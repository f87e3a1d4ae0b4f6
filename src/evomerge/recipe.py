"""The recipe: a plain, serialisable description of one merge, in mergekit's YAML schema.

An existing mergekit configuration for the supported methods loads unchanged. The recipe is
the boundary between search and merging: search spaces produce recipes, the merge engine
consumes them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TypeAlias

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evomerge.errors import ConfigError
from evomerge.io.paths import resolve_relative
from evomerge.io.text import parse_yaml, read_text

Scalar: TypeAlias = bool | int | float | str
ScalarOrGradient: TypeAlias = Scalar | list[Scalar]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ConditionalParameter(_Strict):
    """A value that applies to tensors whose name contains ``filter`` (all when omitted)."""

    value: ScalarOrGradient
    filter: str | None = None


ParameterSetting: TypeAlias = ConditionalParameter | list[ConditionalParameter] | ScalarOrGradient
Parameters: TypeAlias = dict[str, ParameterSetting]


class InputModel(_Strict):
    model: str
    parameters: Parameters | None = None
    data: dict[str, Any] | None = None  # this model's statistics data (regmean, fisher)


class InputSlice(_Strict):
    model: str
    layer_range: tuple[int, int]
    parameters: Parameters | None = None

    @field_validator("layer_range")
    @classmethod
    def _ordered(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 0 or v[1] <= v[0]:
            raise ValueError(f"layer_range {list(v)} must satisfy 0 <= start < end")
        return v


class OutputSlice(_Strict):
    sources: list[InputSlice] = Field(min_length=1)
    # evomerge extension (not in mergekit): this slice's own method, e.g. per layer group in
    # the LFS search space; None: the recipe's merge_method
    merge_method: str | None = None
    # evomerge extension: multiply the hidden state leaving this slice's last layer (the
    # depth-wise integration space); written to config.json, see merge/stack.py
    output_scale: float | None = Field(default=None, ge=0)
    base_model: str | None = None
    residual_weight: float | None = None
    parameters: Parameters | None = None


class TokenSettings(_Strict):
    """mergekit's per-token embedding settings (``tokenizer.tokens.<token>``)."""

    # a model path, {kind: zero} or {kind: model_token, model, token | token_id}
    source: str | dict[str, Any] | None = None
    force: bool = False  # use ``source`` even in models that have the token


class TokenizerSettings(_Strict):
    """mergekit's ``tokenizer:`` block (see merge/vocab.py)."""

    source: str = "union"  # base, union or a model directory
    tokens: dict[str, TokenSettings] | None = None  # per-token settings (where a row comes from)
    pad_to_multiple_of: int | None = Field(default=None, ge=1)  # pad the vocabulary size


class MergeRecipe(_Strict):
    """mergekit's MergeConfiguration, restricted to what evomerge implements."""

    merge_method: str  # `evomerge methods` lists them with their parameters
    models: list[InputModel] | None = None  # whole models (or `slices`, not both)
    slices: list[OutputSlice] | None = None  # layer ranges per output slice (stacking)
    modules: dict[str, Any] | None = None  # mergekit's modules: form, refused
    base_model: str | None = None  # the base (task-vector methods) or config donor
    parameters: Parameters | None = None  # recipe-wide parameters (models' own win)
    dtype: str | None = None  # mergekit's compute dtype; evomerge computes in float32
    out_dtype: str | None = None  # the stored dtype (default dtype, else the base's)
    # base, union or a model directory: align vocabularies that differ (merge.md)
    tokenizer_source: str | None = None
    tokenizer: TokenizerSettings | None = None  # mergekit's tokenizer block, instead
    chat_template: str | None = None  # auto, chatml or a Jinja template
    # data-dependent methods (regmean, fisher): the items their statistics come from, as
    # np-merge's data block ({zoo: add_en, limit: 64}, file, lm_eval); evomerge extension
    data: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_input_form(self) -> MergeRecipe:
        if self.modules:
            raise ValueError("'modules' recipes are not supported; use 'models' or 'slices'")
        if bool(self.models) == bool(self.slices):
            raise ValueError("exactly one of 'models' or 'slices' must be given")
        if self.tokenizer is not None and self.tokenizer_source is not None:
            raise ValueError("give either tokenizer_source or a tokenizer block, not both")
        names = [m.model for m in self.models or []]
        dup = next((m for m in names if names.count(m) > 1), None)
        if dup is not None:
            raise ValueError(f"model {dup!r} is listed twice in models; list it once with one "
                             "weight (mergekit would silently keep only one entry)")
        bad = _nonfinite(self.model_dump(include={"parameters", "models", "slices"}))
        if bad is not None:
            raise ValueError(f"{bad}: parameter values must be finite numbers")
        return self

    def referenced_models(self) -> list[str]:
        """Every model path the recipe names, in first-mention order."""
        seen: dict[str, None] = {}
        if self.base_model:
            seen[self.base_model] = None
        for m in self.models or []:
            seen[m.model] = None
        for s in self.slices or []:
            if s.base_model:
                seen[s.base_model] = None
            for src in s.sources:
                seen[src.model] = None
        return list(seen)

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)

    def with_models_resolved(self, base_dir: Path) -> MergeRecipe:
        """Model paths made absolute: as given if they exist from the CWD, else relative to
        ``base_dir`` (the recipe file's directory)."""
        mapping = {m: resolve_relative(m, base_dir) for m in self.referenced_models()}
        data = self.model_dump(mode="python")

        def fix(obj: Any) -> Any:
            if isinstance(obj, dict):
                return {k: (mapping.get(v, v) if k in ("model", "base_model")
                            and isinstance(v, str) else fix(v)) for k, v in obj.items()}
            if isinstance(obj, list):
                return [fix(v) for v in obj]
            return obj

        data = fix(data)

        def path(v: Any) -> Any:
            if not isinstance(v, str) or v in ("base", "union"):
                return v
            return mapping.get(v) or resolve_relative(v, base_dir)

        data["tokenizer_source"] = path(data.get("tokenizer_source"))
        if data.get("tokenizer"):
            data["tokenizer"]["source"] = path(data["tokenizer"]["source"])
            for settings in (data["tokenizer"].get("tokens") or {}).values():
                settings["source"] = path(settings.get("source"))
        return MergeRecipe.model_validate(data)


def _nonfinite(obj: Any, where: str = "") -> str | None:
    """The location of the first NaN or infinite number in a nested structure, or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return where or "value"
    if isinstance(obj, dict):
        items: Any = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        found = _nonfinite(v, f"{where}.{k}" if where else str(k))
        if found is not None:
            return found
    return None


def load_recipe(source: str | Path | dict[str, Any]) -> MergeRecipe:
    """Parse and validate a recipe from a YAML file, YAML text or a dict."""
    base_dir = Path.cwd()
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source) if not (isinstance(source, str) and "\n" in source) else None
        if path is not None:
            text = read_text(path, "recipe file")
            base_dir = path.resolve().parent
        else:
            text = str(source)
        data = parse_yaml(text, "recipe" if path is None else f"recipe {path}")
    if not isinstance(data, dict):
        raise ConfigError("recipe must be a YAML mapping with merge_method and models or slices")
    try:
        recipe = MergeRecipe.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid recipe: {format_validation_error(exc)}") from None
    return recipe.with_models_resolved(base_dir)


def format_validation_error(exc: ValidationError) -> str:
    """The first pydantic error as one line: 'models.0.parameters: message'."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()) if not str(p).startswith("function-"))
    msg = err.get("msg", "invalid value").removeprefix("Value error, ")
    extra = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{loc}: {msg}{extra}" if loc else f"{msg}{extra}"
