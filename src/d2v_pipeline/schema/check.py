"""Validate parameters against the schema and report every problem, each where it was set.

:func:`find_problems` turns pydantic's errors into ``(key path, problem)`` pairs with plain
messages (``5 > encoder depth 2``, ``unknown key; did you mean 'train'?``).
:class:`ParameterSources` knows which file set each key (``conf/base/...``,
``conf/<env>/...`` or ``--params``), and :class:`ParameterError` lists every problem as
``<file>: <full.key.path>: <problem>``.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from d2v_pipeline.schema.base import BlockProblems

RUNTIME = "--params"

_TYPE_PROBLEMS = {
    "bool_type": "is not true/false",
    "int_type": "is not an integer",
    "int_from_float": "is not an integer",
    "float_type": "is not a number",
    "finite_number": "is not a finite number",
    "string_type": "is not a string",
    "list_type": "is not a list",
    "model_type": "is not a mapping",
    "dict_type": "is not a mapping",
    "model_attributes_type": "is not a mapping",
    "none_required": "must be null",
}


@dataclass(frozen=True)
class Problem:
    """One broken rule: the key path (dotted, list positions as numbers) and what is wrong."""

    path: str
    message: str


def _block_at(model: type[BaseModel], loc: Iterable[Any]) -> type[BaseModel] | None:
    """The block class at ``loc`` inside ``model`` (``None`` when it is not a block)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _inner_block(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _inner_block(annotation: Any) -> Any:
    """The block type inside ``X``, ``X | None``, ``list[X]`` or ``Annotated[X, ...]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_block(arg)
        if found is not None:
            return found
    return None


# Keys that used to live in other blocks: the error says where they went.
MOVED_KEYS = {
    "threads": "<m>.runtime.threads (parameters_runtime.yml)",
    "device": "<m>.runtime.device (parameters_runtime.yml)",
}


def _unknown_key(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    if str(loc[-1]) in MOVED_KEYS:
        return f"unknown key; it moved to {MOVED_KEYS[str(loc[-1])]}"
    parent = _block_at(model, loc[:-1])
    known = sorted(parent.model_fields) if parent is not None else []
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key (known: {', '.join(known)})" if known else "unknown key"


def _describe(error: Mapping[str, Any], model: type[BaseModel]) -> list[Problem]:
    loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, BlockProblems):
        return [Problem(_dotted((*loc, *key.split("."))), msg) for key, msg in cause.problems]
    if kind == "missing":
        message = "missing"
    elif kind == "extra_forbidden":
        message = _unknown_key(model, loc)
    elif kind == "literal_error":
        message = f"{value!r} is not one of {ctx.get('expected')}"
    elif kind in _TYPE_PROBLEMS:
        message = f"{value!r} {_TYPE_PROBLEMS[kind]}"
    elif kind == "value_error" and cause is not None:
        message = str(cause)
    elif kind in ("interval", "span", "items", "odd", "non_empty", "variant", "sep"):
        message = error["msg"]
    else:
        message = f"{value!r}: {error['msg']}"
    return [Problem(_dotted(loc), message)]


def _dotted(loc: Iterable[Any]) -> str:
    return ".".join(str(part) for part in loc if part != "")


def find_problems(
    model: type[BaseModel], values: Any, prefix: str = ""
) -> tuple[BaseModel | None, list[Problem]]:
    """Validate ``values`` as ``model``: (the model, []) or (None, every problem found).

    Paths start with ``prefix`` (e.g. ``image.ingest``); positions in lists are dropped from
    the path (the message shows the value), so ``label_fractions: 1.5 is outside (0, 1]``.
    """
    try:
        return model.model_validate(values), []
    except ValidationError as err:
        problems = []
        for error in err.errors(include_url=False):
            for p in _describe(error, model):
                parts = [s for s in p.path.split(".") if s and not s.isdigit()]
                problems.append(Problem(".".join([prefix, *parts]).strip("."), p.message))
        return None, list(dict.fromkeys(problems))


def validated(
    model: type[BaseModel],
    values: Any,
    prefix: str,
    file: str,
    error: type[Exception] = ValueError,
) -> Any:
    """``values`` validated as ``model``, or ``error`` listing every problem, one per line, as
    ``<file>: <prefix.key.path>: <problem>``: the check a stage's parser runs when it is
    called outside ``kedro run`` (which validates every block first, see hooks.py)."""
    block, problems = find_problems(model, {} if values is None else values, prefix)
    if problems:
        raise error("\n".join(f"{file}: {p.path}: {p.message}" for p in problems))
    return block


# ----------------------------------------------------------------------------- provenance
def _has(tree: Any, path: list[str]) -> int:
    """How many leading parts of ``path`` the nested dict ``tree`` contains."""
    depth = 0
    for part in path:
        if not isinstance(tree, Mapping) or part not in tree:
            break
        tree = tree[part]
        depth += 1
    return depth


class ParameterSources:
    """The parameters files of a run, in merge order (base, then the env, then ``--params``),
    each with its nested values, to say which one set a key."""

    def __init__(self, sources: list[tuple[str, Mapping[str, Any]]]) -> None:
        self.sources = sources

    @classmethod
    def from_config_loader(cls, loader: Any, project_path: Path) -> ParameterSources:
        """The files Kedro's OmegaConfigLoader merges for ``parameters``."""
        from omegaconf import OmegaConf

        base, env, *_ = loader._read_raw_config("parameters")
        sources = []
        for configs in (base, env):
            for path, conf in sorted(configs.items(), key=lambda item: str(item[0])):
                sources.append((_relative(path, project_path), OmegaConf.to_container(conf)))
        if loader.runtime_params:
            sources.append((RUNTIME, loader.runtime_params))
        return cls(sources)

    def origin(self, path: str) -> str:
        """The source that set ``path``: the last one holding the whole key; for a key that
        none holds (a missing key), the first one holding most of its parents (the file
        that defines the block)."""
        parts = path.split(".")
        best, best_depth = "parameters", 0
        for name, tree in self.sources:
            depth = _has(tree, parts)
            if depth == len(parts) or depth > best_depth:
                best, best_depth = name, depth
        return best


def _relative(path: Any, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


class ParameterError(ValueError):
    """Parameters that break the schema: one line per problem, ``<file>: <key>: <problem>``."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        count = f"{len(lines)} problem{'s' if len(lines) != 1 else ''}"
        super().__init__(
            f"invalid parameters ({count}; nothing was run):\n" + "\n".join(f"  {s}" for s in lines)
        )


def check_parameters(
    model: type[BaseModel], values: Any, sources: ParameterSources | None = None
) -> BaseModel:
    """The validated model, or :class:`ParameterError` listing every problem with its file."""
    validated, problems = find_problems(model, values)
    if problems:
        origin = sources.origin if sources is not None else (lambda _: "parameters")
        raise ParameterError([f"{origin(p.path)}: {p.path}: {p.message}" for p in problems])
    assert validated is not None
    return validated
