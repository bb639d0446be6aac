"""Render a :class:`~d2v_pipeline.reporting.document.Document` to one self-contained HTML
file (inline CSS, figures as base64 PNG data URIs, no scripts, no external resources) or
to Markdown (figures as relative links ``<figures_dir>/<name>.png``).

The HTML is legible on a phone: every table scrolls sideways in its own container (the page
itself never does), names never break mid-word, and each figure is a link to its full-size
version, a ``:target`` overlay inside the page (a data-URI link would be blocked as a
top-level navigation, and the file must stay self-contained).
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

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

CSS = """
*, *::before, *::after { box-sizing: border-box; }
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto;
  max-width: 1100px; padding: 1.5em 2em 4em; color: #1d1d1f; line-height: 1.45;
  overflow-wrap: break-word; }
h1 { border-bottom: 2px solid #444; padding-bottom: .3em; font-size: 1.75em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
h3 { margin-top: 1.6em; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .92em; }
.table-wrap { overflow-x: auto; max-width: 100%; margin: .8em 0 1.2em; }
table { border-collapse: collapse; font-size: .9em; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: .3em 0; }
th, td { border: 1px solid #d0d0d0; padding: .3em .6em; vertical-align: top;
  overflow-wrap: normal; word-break: keep-all; }
th { background: #f2f2f4; text-align: left; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.name { white-space: nowrap; }
td.code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .85em;
  min-width: 18ch; overflow-wrap: anywhere; }
td.best { background: #e3f4e1; }
td.group { background: #f7f7f9; font-weight: 600; padding-top: .5em; }
sup.fn { color: #8a5a00; font-weight: 600; line-height: 0; }
p.table-note { color: #555; font-size: .85em; margin: -.8em 0 1.2em; }
.callout { border-left: 5px solid; padding: .6em 1em; margin: 1em 0; border-radius: 3px; }
.callout.banner { border-color: #e65100; background: #fff3e0; font-weight: 700;
  font-size: 1.05em; }
.callout.warning { border-color: #c62828; background: #fdecea; font-weight: 600; }
.callout.note { border-color: #1565c0; background: #e8f0fb; }
.callout.not-run { border-color: #9e9e9e; background: #f4f4f4; font-style: italic; }
p.verdict { font-size: 1.02em; }
p.muted { color: #555; font-size: .88em; }
details { border: 1px solid #d8d8d8; border-radius: 4px; padding: .3em .9em; margin: .8em 0; }
details > summary { cursor: pointer; font-weight: 600; padding: .2em 0; }
details[open] > summary { margin-bottom: .4em; }
figure { margin: 1em 0 2em; }
figure a.zoom { display: inline-block; max-width: 100%; cursor: zoom-in; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #eee; }
figure.compact img { max-height: 350px; width: auto; }
figure .close { display: none; }
figure:target { position: fixed; inset: 0; z-index: 10; margin: 0; padding: .6em;
  background: #fff; overflow: auto; }
figure:target a.zoom { cursor: default; max-width: none; }
figure:target img { max-width: none; max-height: none; width: auto; height: auto; }
figure:target .close { display: inline-block; position: sticky; top: 0; left: 0;
  margin-bottom: .5em; padding: .3em .8em; background: #1d1d1f; color: #fff;
  border-radius: 4px; text-decoration: none; }
figcaption { color: #555; font-size: .9em; }
nav ul { columns: 2; }
.context { border: 2px dashed #b0a060; padding: 0 1.2em 1em; background: #fffdf3; }
@media (max-width: 640px) {
  body { padding: 1em .8em 3em; }
  h1 { font-size: 1.4em; }
  nav ul { columns: 1; padding-left: 1.2em; }
  .context { padding: 0 .6em .6em; }
}
"""

CALLOUT_LABELS = {"banner": "", "warning": "Warning: ", "note": "Note: ", "not-run": "Not run: "}


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


def _esc(text: str) -> str:
    return html.escape(str(text), quote=True)


def footnote_marks(rows: Iterable[Iterable[Cell]]) -> dict[str, str]:
    """A letter per distinct cell note, in order of first appearance: {note: 'a'}."""
    marks: dict[str, str] = {}
    for row in rows:
        for c in row:
            if c.note and c.note not in marks:
                marks[c.note] = chr(ord("a") + len(marks) % 26) * (1 + len(marks) // 26)
    return marks


def to_html(document: Document, figures: Mapping[str, Any] | None = None) -> str:
    """One self-contained HTML page; every text goes through :func:`html.escape`.

    ``figures`` maps figure names to Figures, PNG paths or PNG bytes; a referenced
    figure that is missing is shown as a "not available" note instead of a broken image.
    """
    figures = figures or {}
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(document.title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_esc(document.title)}</h1>",
    ]
    blocks = document.blocks
    if not any(isinstance(b, Contents) for b in blocks):
        blocks = [Contents(), *blocks]  # by default the contents open the page
    out += _html_blocks(blocks, figures, top_level=True, sections=document.headings(2))
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _html_blocks(
    blocks: Iterable[Block],
    figures: Mapping[str, Any],
    top_level: bool,
    sections: Iterable[Heading] = (),
) -> list[str]:
    out: list[str] = []
    in_context = False
    for block in blocks:
        if isinstance(block, Contents):
            links = [
                f'<li><a href="#{_esc(h.anchor or slug(h.text))}">{_esc(h.text)}</a></li>'
                for h in sections
            ]
            if links:
                out.append("<nav><ul>" + "".join(links) + "</ul></nav>")
        elif isinstance(block, Heading):
            if block.level <= 2 and in_context:
                out.append("</div>")
                in_context = False
            anchor = block.anchor or slug(block.text)
            if top_level and block.level == 2 and anchor == "context":
                # the paper's numbers sit in a visibly separate box
                out.append('<div class="context">')
                in_context = True
            level = min(max(block.level, 1), 6)
            out.append(f'<h{level} id="{_esc(anchor)}">{_esc(block.text)}</h{level}>')
        elif isinstance(block, Paragraph):
            cls = f' class="{_esc(block.style)}"' if block.style else ""
            out.append(f"<p{cls}>{_esc(block.text)}</p>")
        elif isinstance(block, Callout):
            label = CALLOUT_LABELS[block.kind]
            strong = f"<strong>{_esc(label)}</strong>" if label else ""
            out.append(f'<div class="callout {_esc(block.kind)}">{strong}{_esc(block.text)}</div>')
        elif isinstance(block, BulletList):
            out.append("<ul>" + "".join(f"<li>{_esc(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            out.append(_html_table(block))
        elif isinstance(block, FigureRef):
            out.append(_html_figure(block, figures.get(block.name)))
        elif isinstance(block, Details):
            out.append(f"<details><summary>{_esc(block.summary)}</summary>")
            out += _html_blocks(block.blocks, figures, top_level=False, sections=sections)
            out.append("</details>")
    if in_context:
        out.append("</div>")
    return out


def _html_table(t: Table) -> str:
    marks = footnote_marks(t.rows)
    parts = ['<div class="table-wrap"><table>']
    if t.caption:
        parts.append(f"<caption>{_esc(t.caption)}</caption>")
    parts.append(
        "<thead><tr>" + "".join(f"<th>{_esc(c)}</th>" for c in t.columns) + "</tr></thead>"
    )
    parts.append("<tbody>")
    for row in t.rows:
        cells = []
        for c in row:
            flags = (("num", c.numeric), ("best", c.best), (c.kind, bool(c.kind)))
            classes = " ".join(k for k, on in flags if on)
            attr = f' class="{classes}"' if classes else ""
            if c.span > 1:
                attr += f' colspan="{c.span}"'
            if c.note:
                attr += f' title="{_esc(c.note)}"'
            text = f"<strong>{_esc(c.text)}</strong>" if c.strong or c.best else _esc(c.text)
            if c.note:
                text += f'<sup class="fn">{marks[c.note]}</sup>'
            cells.append(f"<td{attr}>{text}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table></div>")
    notes = [*t.notes, *(f"{mark}: {note}" for note, mark in marks.items())]
    parts += [f'<p class="table-note">{_esc(n)}</p>' for n in notes]
    return "\n".join(parts)


def figure_ids(name: str) -> tuple[str, str]:
    """(in-page anchor just before the figure, id of its full-size ``:target`` view)."""
    return f"fig-{slug(name)}", f"fig-{slug(name)}-full"


def _html_figure(ref: FigureRef, figure: Any) -> str:
    if figure is None:
        return (
            f'<div class="callout not-run"><strong>Not available: </strong>'
            f"figure {_esc(ref.name)} was not produced.</div>"
        )
    data = base64.b64encode(png_bytes(figure)).decode("ascii")
    anchor, full = figure_ids(ref.name)
    cls = ' class="compact"' if ref.compact else ""
    # the link opens the same <figure> as a full-size overlay (CSS :target); "close"
    # returns to the anchor right before it, so the page stays where the reader was
    return (
        f'<span id="{anchor}"></span><figure id="{full}"{cls}>'
        f'<a class="close" href="#{anchor}">close full size ✕</a>'
        f'<a class="zoom" href="#{full}" title="open full size">'
        f'<img alt="{_esc(ref.caption)}" src="data:image/png;base64,{data}"></a>'
        f"<figcaption>{_esc(ref.caption)} (tap or click for full size)</figcaption></figure>"
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
                lines.append(f"- [{md_escape(h.text)}](#{h.anchor or slug(h.text)})")
            lines += [""] if sections else []
        elif isinstance(block, Heading):
            level = min(max(block.level, 1), 6)
            anchor = block.anchor or slug(block.text)
            lines += [f'<a id="{anchor}"></a>', "", f"{'#' * level} {md_escape(block.text)}", ""]
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
