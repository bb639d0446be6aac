"""A tiny format-neutral document model: the report is built once as blocks of plain text,
then rendered to HTML and to Markdown (:mod:`d2v_pipeline.reporting.render`).

Blocks hold plain text only; escaping is the renderers' job, so no input string can
inject markup into either output.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
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
    """A boxed message: ``banner`` (a smoke / non-base run), ``warning`` (e.g. collapse),
    ``note``, or ``not-run``."""

    kind: Literal["banner", "warning", "note", "not-run"]
    text: str


@dataclass(frozen=True)
class BulletList:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Cell:
    """A table cell; ``best`` marks the best score of its group (bold and highlighted).

    ``kind``: ``""`` plain text, ``"name"`` a name that never wraps (method, parameter key),
    ``"code"`` an identifier that may break anywhere (a hash), ``"group"`` a heading row
    over the rows below it. ``note`` says why a cell is empty or special: a footnote marker
    in both outputs (and a tooltip in HTML). ``span`` is the number of columns it covers.
    """

    text: str
    strong: bool = False
    numeric: bool = False
    best: bool = False
    kind: Literal["", "name", "code", "group"] = ""
    note: str = ""
    span: int = 1


@dataclass(frozen=True)
class Table:
    """Rows of cells; ``notes`` are printed under the table (cell notes follow them)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    caption: str = ""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class FigureRef:
    """A figure by its name in the figures dict (``<name>.png``); ``compact`` figures (e.g.
    confusion matrices) are shown at most ~350 px tall in the page."""

    name: str
    caption: str
    compact: bool = False


@dataclass(frozen=True)
class Details:
    """Collapsed content: HTML ``<details>`` with ``summary`` as its visible line; Markdown
    renders it as a heading of ``level`` followed by the blocks."""

    summary: str
    blocks: tuple[Block, ...]
    level: int = 3


@dataclass(frozen=True)
class Contents:
    """The table of contents (links to every top-level section heading), placed here."""


Block = Heading | Paragraph | Callout | BulletList | Table | FigureRef | Details | Contents


def walk(blocks: Iterable[Block]) -> Iterator[Block]:
    """Every block, depth first, including those inside :class:`Details`."""
    for block in blocks:
        yield block
        if isinstance(block, Details):
            yield from walk(block.blocks)


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def headings(self, level: int = 2) -> list[Heading]:
        """Top-level headings of ``level`` (the table of contents)."""
        return [b for b in self.blocks if isinstance(b, Heading) and b.level == level]

    def figure_names(self) -> list[str]:
        return [b.name for b in walk(self.blocks) if isinstance(b, FigureRef)]


def cell(value: object, *, strong: bool = False, numeric: bool = False) -> Cell:
    return value if isinstance(value, Cell) else Cell(str(value), strong, numeric)


def table(
    columns: list[str] | tuple[str, ...],
    rows: list,
    caption: str = "",
    notes: Iterable[str] = (),
) -> Table:
    """Build a :class:`Table`; plain values in ``rows`` become cells."""
    return Table(
        tuple(columns),
        tuple(tuple(cell(v) for v in row) for row in rows),
        caption=caption,
        notes=tuple(notes),
    )


def slug(text: str) -> str:
    """An anchor id from a heading: lower case, ASCII letters/digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
