"""A tiny format-neutral document model: the report is built once as blocks of plain text,
then rendered to HTML and to Markdown (:mod:`d2v_pipeline.reporting.render`).

Blocks hold plain text only; escaping is the renderers' job, so no input string can
inject markup into either output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2
    anchor: str = ""


@dataclass(frozen=True)
class Paragraph:
    text: str
    # "" normal, "muted" small print, "verdict" a headline statement
    style: str = ""


@dataclass(frozen=True)
class Callout:
    """A boxed message: ``warning`` (e.g. collapse), ``note``, or ``not-run``."""

    kind: Literal["warning", "note", "not-run"]
    text: str


@dataclass(frozen=True)
class BulletList:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Cell:
    """A table cell; ``best`` marks the best score of its group (bold and highlighted)."""

    text: str
    strong: bool = False
    numeric: bool = False
    best: bool = False


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class FigureRef:
    """A figure by its name in the figures dict (``<name>.png``)."""

    name: str
    caption: str


Block = Heading | Paragraph | Callout | BulletList | Table | FigureRef


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def headings(self, level: int = 2) -> list[Heading]:
        return [b for b in self.blocks if isinstance(b, Heading) and b.level == level]

    def figure_names(self) -> list[str]:
        return [b.name for b in self.blocks if isinstance(b, FigureRef)]


def cell(value: object, *, strong: bool = False, numeric: bool = False) -> Cell:
    return value if isinstance(value, Cell) else Cell(str(value), strong, numeric)


def table(columns: list[str] | tuple[str, ...], rows: list, caption: str = "") -> Table:
    """Build a :class:`Table`; plain values in ``rows`` become cells."""
    return Table(
        tuple(columns), tuple(tuple(cell(v) for v in row) for row in rows), caption=caption
    )


def slug(text: str) -> str:
    """An anchor id from a heading: lower case, ASCII letters/digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
