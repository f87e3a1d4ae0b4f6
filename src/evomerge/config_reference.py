"""docs/config.md, generated from the pydantic models and their comments, so the reference
cannot drift from the code (tests/test_config_reference.py compares them).

    python -m evomerge.config_reference > docs/config.md

Each field's description is the comment on its line or the comment lines right above it in
the model's source; components (spaces, optimizers, backends) get one table per registered
name, from the ``Options`` model the config block is validated with.
"""

from __future__ import annotations

import ast
import inspect
import io
import re
import textwrap
import tokenize
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

HEADER = """# Configuration reference

Generated from the code by `python -m evomerge.config_reference > docs/config.md` (a test
fails when this file and the code disagree). Unknown keys are refused everywhere with the
closest valid name. Paths are taken as written when they exist from the working directory,
else relative to the config file. Task file `options` (generation settings, field names,
few-shot, chat): [tasks.md](tasks.md). Complete examples: `examples/*.yaml`, and `evomerge init`
writes a commented starting config for your models and task files.
"""


def comments(cls: type) -> dict[str, str]:
    """Field name -> its comment (same line, else the comment lines directly above)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    notes: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            notes[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    out: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        def clean(note: str) -> str:
            return re.sub(r"\s*(type: ignore\S*|noqa\S*)", "", note).strip()

        text = [clean(notes[n]) for n in range(node.lineno, (node.end_lineno or node.lineno) + 1)
                if n in notes and not lines[n - 1].lstrip().startswith("#")]
        above, n = [], node.lineno - 1
        while n in notes and lines[n - 1].lstrip().startswith("#"):
            above.insert(0, notes[n])
            n -= 1
        # a field's own comment on its line wins; a comment block above belongs to the
        # field only when it has none (a block above a group of fields is not run into the
        # first field's meaning)
        out[node.target.id] = " ".join([t for t in text if t] or above)
    return out


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " \\| ".join(_type(a) for a in args if a is not type(None)) + (
            " \\| null" if type(None) in args else "")
    if origin in (list, tuple, dict):
        inner = ", ".join(_type(a) for a in args if a is not Ellipsis)
        return f"{origin.__name__}[{inner}]"
    if isinstance(annotation, type) and annotation.__name__ == "ComponentOptions":
        return "mapping (below)"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    return getattr(annotation, "__name__", str(annotation)).replace("|", "\\|")


def _default(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "see below"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`" if value not in ({}, [], ()) else f"`{value!r}`"


def table(model: type[BaseModel], skip: tuple[str, ...] = ()) -> str:
    notes: dict[str, str] = {}
    for klass in reversed(model.__mro__):  # inherited fields keep their own comments
        if isinstance(klass, type) and issubclass(klass, BaseModel) and klass is not BaseModel:
            notes.update(comments(klass))
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        rows.append(f"| `{name}` | {_type(field.annotation)} | {_default(field)} | "
                    f"{notes.get(name, '').replace('|', '/')} |")
    return "\n".join(rows)


def section(title: str, model: type[BaseModel], level: int = 2,
            skip: tuple[str, ...] = ()) -> str:
    own = model.__dict__.get("__doc__")  # not an inherited docstring
    doc = inspect.cleandoc(own) if own else ""
    doc = "" if doc.startswith(("Usage docs", "!!!")) else doc
    return f"{'#' * level} {title}\n\n" + (f"{doc}\n\n" if doc else "") + table(model, skip)


def components(kind: str, key: str, title: str) -> str:
    from evomerge.config import _registry

    reg = _registry(kind)
    parts = [f"## {title}\n\nThe `{kind}:` block; `{key}` names the {kind} "
             f"({', '.join(f'`{n}`' for n in reg.names())})."]
    for name in reg.names():
        parts.append(section(f"{kind} `{name}`", reg.get(name).Options, 3, skip=(key,)))
    return "\n\n".join(parts)


def render() -> str:
    from evomerge.config import (
        DataConfig,
        EvolveConfig,
        FinalConfig,
        FitnessConfig,
        NPMergeConfig,
        TaskConfig,
    )
    from evomerge.recipe import MergeRecipe, TokenizerSettings, TokenSettings

    parts = [HEADER,
             section("EvolveConfig", EvolveConfig) + "\n\n`evomerge evolve CONFIG`; "
             "`space`, `optimizer` and `backend` are below, per component.",
             section("TaskConfig", TaskConfig), section("FitnessConfig", FitnessConfig),
             section("FinalConfig", FinalConfig),
             components("space", "type", "Search spaces"),
             components("optimizer", "name", "Optimizers"),
             components("backend", "name", "Backends"),
             section("NPMergeConfig", NPMergeConfig) + "\n\n`evomerge np-merge CONFIG`.",
             section("DataConfig", DataConfig),
             section("MergeRecipe", MergeRecipe) + "\n\n`evomerge merge RECIPE`: mergekit's "
             "schema; methods and their parameters: `evomerge methods`, "
             "[merge.md](merge.md).",
             section("TokenizerSettings", TokenizerSettings),
             section("TokenSettings", TokenSettings)]
    return "\n\n".join(parts).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
