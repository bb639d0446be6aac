"""Render a :class:`~d2v_pipeline.reporting.document.Document` to one self-contained HTML
file (inline CSS, figures as base64 PNG data URIs, no scripts, no external resources) or
to Markdown (figures as relative links ``<figures_dir>/<name>.png``).

The HTML is legible on a phone: every table scrolls sideways in its own container (the page
itself never does), names never break mid-word, and each figure is a link to its full-size
version, a ``:target`` overlay inside the page (a data-URI link would be blocked as a
top-level navigation, and the file must stay self-contained).

The page comes from Jinja2 templates in ``templates/`` (``report.html.j2``: the page;
``blocks.html.j2``: one macro per block type; ``report.css.j2``: the style sheet), rendered
with autoescape on and :class:`~jinja2.StrictUndefined`: every value a template prints is
escaped, and a missing variable or attribute raises instead of printing nothing.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from d2v_pipeline.reporting.document import (
    Block,
    BulletList,
    Callout,
    Cell,
    Contents,
    Details,
    Document,
    FigureRef,
    Heading,
    Paragraph,
    Table,
    slug,
)

CALLOUT_LABELS = {"banner": "", "warning": "Warning: ", "note": "Note: ", "not-run": "Not run: "}

# the Jinja tests that blocks.html.j2 dispatches on (``{% if block is table %}``)
BLOCK_TESTS = {
    "heading": Heading,
    "paragraph": Paragraph,
    "callout": Callout,
    "bullet_list": BulletList,
    "table": Table,
    "figure_ref": FigureRef,
    "details": Details,
    "contents": Contents,
}


def png_bytes(figure: Any) -> bytes:
    """PNG bytes of a matplotlib Figure, a PNG file path, or PNG bytes."""
    if isinstance(figure, bytes | bytearray):
        return bytes(figure)
    if isinstance(figure, str | os.PathLike):
        return Path(figure).read_bytes()
    if hasattr(figure, "savefig"):
        buf = io.BytesIO()
        figure.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        return buf.getvalue()
    raise TypeError(f"cannot embed a figure of type {type(figure).__name__}")


def footnote_marks(rows: Iterable[Iterable[Cell]]) -> dict[str, str]:
    """A letter per distinct cell note, in order of first appearance: {note: 'a'}."""
    marks: dict[str, str] = {}
    for row in rows:
        for c in row:
            if c.note and c.note not in marks:
                marks[c.note] = chr(ord("a") + len(marks) % 26) * (1 + len(marks) // 26)
    return marks


def figure_ids(name: str) -> tuple[str, str]:
    """(in-page anchor just before the figure, id of its full-size ``:target`` view)."""
    return f"fig-{slug(name)}", f"fig-{slug(name)}-full"


def escape_html(value: Any) -> Markup:
    """The templates' escaping: every ``{{ }}`` value that is not already markup (a macro's
    output) goes through :func:`html.escape` with ``quote=True``.

    Installed as the environment's ``finalize``, so it runs on every printed value before
    Jinja2's own autoescape (which then leaves the result alone). It escapes the same five
    characters as Jinja2's MarkupSafe but writes ``&quot;`` and ``&#x27;`` where MarkupSafe
    writes ``&#34;`` and ``&#39;``: the page stays byte for byte what it was before the
    templates, and the tests that pin its escaped text keep their meaning.
    """
    if hasattr(value, "__html__"):
        return value
    return Markup(html.escape(str(value), quote=True))


def _png_base64(figure: Any) -> str:
    return base64.b64encode(png_bytes(figure)).decode("ascii")


def _unknown_block(block: Any) -> None:
    raise TypeError(f"the HTML report has no template for a block of type {type(block).__name__}")


@functools.cache
def html_environment() -> jinja2.Environment:
    """The Jinja2 environment of the report's templates (built once).

    ``trim_blocks``/``lstrip_blocks`` let a template line of tags produce nothing, so the
    templates are laid out for reading while the page keeps one line per block.
    """
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("d2v_pipeline.reporting", "templates"),
        autoescape=True,
        finalize=escape_html,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.tests.update(
        {name: (lambda b, cls=cls: isinstance(b, cls)) for name, cls in BLOCK_TESTS.items()}
    )
    env.globals.update(
        slug=slug,
        footnote_marks=footnote_marks,
        figure_ids=figure_ids,
        callout_labels=CALLOUT_LABELS,
        png_base64=_png_base64,
        unknown_block=_unknown_block,
    )
    return env


def to_html(document: Document, figures: Mapping[str, Any] | None = None) -> str:
    """One self-contained HTML page from ``templates/report.html.j2``; every text of the
    document is escaped by the template environment (:func:`escape_html`).

    ``figures`` maps figure names to Figures, PNG paths or PNG bytes; a referenced
    figure that is missing is shown as a "not available" note instead of a broken image.
    """
    blocks: list[Block] = list(document.blocks)
    if not any(isinstance(b, Contents) for b in blocks):
        blocks = [Contents(), *blocks]  # by default the contents open the page
    return (
        html_environment()
        .get_template("report.html.j2")
        .render(
            title=document.title,
            blocks=blocks,
            sections=document.headings(2),
            figures=figures or {},
        )
    )


_MD_SPECIAL = "\\`*_[]<>#|~"


def md_escape(text: str) -> str:
    """Escape Markdown punctuation (and ``&``) so input text renders literally."""
    text = str(text).replace("&", "&amp;")
    out = []
    for ch in text:
        if ch in _MD_SPECIAL:
            out.append("&lt;" if ch == "<" else "&gt;" if ch == ">" else "\\" + ch)
        else:
            out.append(ch)
    return "".join(out).replace("\n", " ")


def to_markdown(document: Document, figures_dir: str = "figures") -> str:
    """Markdown with pipe tables; figures link to ``<figures_dir>/<name>.png``; collapsed
    :class:`Details` become a heading and their content (an appendix is a normal section)."""
    lines = [f"# {md_escape(document.title)}", ""]
    blocks = document.blocks
    if not any(isinstance(b, Contents) for b in blocks):
        blocks = [Contents(), *blocks]
    lines += _md_blocks(blocks, figures_dir, document.headings(2))
    return "\n".join(lines).rstrip() + "\n"


def _md_blocks(
    blocks: Iterable[Block], figures_dir: str, sections: list[Heading] | None = None
) -> list[str]:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Contents):
            for h in sections or []:
                # escaped as the heading's <a id> is: the link decodes to the same id
                target = escape_html(h.anchor or slug(h.text))
                lines.append(f"- [{md_escape(h.text)}](#{target})")
            lines += [""] if sections else []
        elif isinstance(block, Heading):
            level = min(max(block.level, 1), 6)
            anchor = block.anchor or slug(block.text)
            # the one piece of HTML in the Markdown: its attribute is escaped like the page's
            html_anchor = f'<a id="{escape_html(anchor)}"></a>'
            lines += [html_anchor, "", f"{'#' * level} {md_escape(block.text)}", ""]
        elif isinstance(block, Paragraph):
            text = md_escape(block.text)
            lines += [f"*{text}*" if block.style == "muted" else text, ""]
        elif isinstance(block, Callout):
            label = {"banner": "", "warning": "Warning", "note": "Note", "not-run": "Not run"}
            head = f"**{label[block.kind]}:** " if label[block.kind] else ""
            text = md_escape(block.text)
            lines += [f"> {head}{f'**{text}**' if block.kind == 'banner' else text}", ""]
        elif isinstance(block, BulletList):
            lines += [f"- {md_escape(i)}" for i in block.items] + [""]
        elif isinstance(block, Table):
            lines += [*_md_table(block), ""]
        elif isinstance(block, FigureRef):
            path = f"{figures_dir.rstrip('/')}/{block.name}.png" if figures_dir else block.name
            lines += [
                f"![{md_escape(block.name)}]({path})",
                "",
                f"*{md_escape(block.caption)}*",
                "",
            ]
        elif isinstance(block, Details):
            level = min(max(block.level, 1), 6)
            lines += [f"{'#' * level} {md_escape(block.summary)}", ""]
            lines += _md_blocks(block.blocks, figures_dir, sections)
    return lines


def _md_table(t: Table) -> list[str]:
    marks = footnote_marks(t.rows)
    lines = [f"**{md_escape(t.caption)}**", ""] if t.caption else []
    lines.append("| " + " | ".join(md_escape(c) for c in t.columns) + " |")
    aligns = []
    for i in range(len(t.columns)):
        numeric = any(len(r) > i and r[i].numeric for r in t.rows)
        aligns.append("---:" if numeric else "---")
    lines.append("| " + " | ".join(aligns) + " |")
    for row in t.rows:
        cells = []
        for c in row:
            text = (
                f"**{md_escape(c.text)}**"
                if c.strong or c.best or c.kind == "group"
                else md_escape(c.text)
            )
            cells.append(text + (f" ({marks[c.note]})" if c.note else ""))
            cells += [""] * (c.span - 1)
        lines.append("| " + " | ".join(cells) + " |")
    notes = [*t.notes, *(f"({mark}) {note}" for note, mark in marks.items())]
    if notes:
        lines.append("")
        lines += [f"*{md_escape(n)}*  " for n in notes]
    return lines
