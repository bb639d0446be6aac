"""docs/parameters.md, generated from the schema: every block, key, type, default and range.

``python -m d2v_pipeline.schema --write`` rewrites it; ``--check`` fails when it is stale (the
test suite runs the check), so the reference cannot drift from what is validated.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from d2v_pipeline.schema.base import Interval, Items, Span
from d2v_pipeline.schema.params import MODALITIES, STAGE_FILES, Parameters

DOCS_PATH = Path(__file__).resolve().parents[3] / "docs" / "parameters.md"

HEADER = """\
# Parameter reference

Generated from `src/d2v_pipeline/schema` by `python -m d2v_pipeline.schema --write`; do not
edit by hand (a test fails when this file is stale).

Every `kedro run` validates all parameters (conf/base, the run's `--env`, and `--params`)
before any node runs, and reports every problem at once, one per line, with the file that
set the key: `conf/base/parameters_pretrain.yml: image.pretrain.data2vec.top_k: 5 > encoder
depth 2`. Unknown keys are errors at every level. Values are strict: `1.0` is not an integer,
`"yes"` is not true/false, and no number may be NaN or infinite.

Blocks shared by every modality are listed once as `<m>.<block>`; a modality-specific block
is listed per modality. *required* = the key has no default and must be set. Ranges use
interval notation: `[0, 1)` includes 0 and excludes 1.

Rules that span keys (checked once the keys they read are valid):

- `<m>.pretrain.data2vec.top_k`, `data2vec2.top_k`, `<m>.finetune.probe.top_k`,
  `<m>.tune.probe.top_k`, `<m>.tune.search_space.top_k` and `<m>.tune.enqueue[].top_k` are at
  most `<m>.pretrain.encoder.depth`.
- `<m>.pretrain.data2vec2.decoder.groups` divides `<m>.pretrain.encoder.dim` (the decoder's
  input width).
- `<m>.finetune.fractions` / `finetune_fractions` and `<m>.tune.probe.label_fraction` are
  among `<m>.ingest.label_fractions`; `<m>.finetune.seeds` and `<m>.tune.probe.subset_seed`
  are below `<m>.ingest.label_subset_draws`.
- Per block: `ema_end_decay >= ema_decay`, `val_fraction + test_fraction < 1`, heads divide
  dim, ranges have low <= high, and the others listed with each block below.
"""


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """(the bare type, the Interval / Span / Items constraints on it)."""
    meta: list[Any] = []
    while typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        meta += [m for m in extra if isinstance(m, Interval | Span | Items)]
    return annotation, meta


def _type_name(annotation: Any) -> str:
    annotation, _ = _unwrap(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " \\| ".join(str(a) for a in args)
    if origin in (typing.Union, type(int | None)):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " \\| ".join(names) + (" \\| null" if type(None) in args else "")
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"mapping to {_type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "block"
    return {bool: "true/false", int: "integer", float: "number", str: "text"}.get(
        annotation, str(annotation)
    )


def _constraints(annotation: Any) -> list[Any]:
    """Interval / Span / Items on ``annotation`` or on a type inside it."""
    bare, found = _unwrap(annotation)
    for arg in typing.get_args(bare):
        found += _constraints(arg)
    return found


def _allowed(info: Any) -> str:
    parts = []
    constraints = [m for m in info.metadata if isinstance(m, Interval | Span | Items)]
    for m in constraints + _constraints(info.annotation):
        if isinstance(m, Interval):
            parts.append(f"in {m}")
        elif isinstance(m, Span):
            parts.append(f"[low, high] in {m.within}")
        elif isinstance(m, Items):
            parts.append(f">= {m.min} item(s)" + (", no repeats" if m.unique else ""))
    return "; ".join(dict.fromkeys(parts))


def _doc(model: type[BaseModel]) -> str:
    """The first paragraph of the nearest docstring in the block's class hierarchy."""
    for cls in model.__mro__:
        if cls.__doc__ and cls.__module__.startswith("d2v_pipeline.schema"):
            return " ".join(cls.__doc__.strip().split("\n\n")[0].split())
    return ""


def _default(info: Any) -> str:
    if info.default_factory is not None:
        if _inner_block(info.annotation) is not None:
            return "(block)"
        value = info.default_factory()
    elif info.default is PydanticUndefined:
        return "*required*"
    else:
        value = info.default
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`"


def _inner_block(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if (found := _inner_block(arg)) is not None:
            return found
    return None


def _walk(model: type[BaseModel], path: tuple[str, ...], out: list) -> None:
    out.append((path, model))
    for name, info in model.model_fields.items():
        block = _inner_block(info.annotation)
        if block is not None:
            _walk(block, (*path, name), out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(model: type[BaseModel]) -> list[str]:
    rows = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for name, info in model.model_fields.items():
        rows.append(
            f"| `{name}` | {_type_name(info.annotation)} | {_cell(_default(info))} "
            f"| {_cell(_allowed(info))} | {_cell(info.description or '')} |"
        )
    return rows


def render() -> str:
    """The whole reference as Markdown."""
    blocks: list[tuple[tuple[str, ...], type[BaseModel]]] = []
    _walk(Parameters, (), blocks)
    # a block class used at the same place in every modality is documented once, as <m>.
    seen: dict[tuple[type[BaseModel], tuple[str, ...]], set[str]] = {}
    for path, model in blocks:
        if path and path[0] in MODALITIES:
            seen.setdefault((model, path[1:]), set()).add(path[0])
    lines = [HEADER]
    done = set()
    for path, model in blocks:
        if len(path) < 2 and path != ("report",):
            continue  # the top level and the modality containers hold only blocks
        shared = path[0] in MODALITIES and seen[(model, path[1:])] == set(MODALITIES)
        name = ".".join(("<m>", *path[1:]) if shared else path)
        if name in done:
            continue
        done.add(name)
        stage = STAGE_FILES.get(path[1] if path[0] in MODALITIES else path[0], "")
        lines += [f"## `{name}`", "", f"{_doc(model)} (conf/base/{stage})", "", *_table(model), ""]
    return "\n".join(lines).rstrip() + "\n"


def write(path: Path = DOCS_PATH) -> None:
    path.write_text(render(), encoding="utf-8")


def is_current(path: Path = DOCS_PATH) -> bool:
    return path.is_file() and path.read_text(encoding="utf-8") == render()
