"""Render a :class:`~d2v_pipeline.reporting.document.Document` to one self-contained HTML
file (inline CSS, figures as base64 PNG data URIs, no scripts, no external resources) or
to Markdown (figures as relative links ``<figures_dir>/<name>.png``)."""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from d2v_pipeline.reporting.document import (
    BulletList,
    Callout,
    Document,
    FigureRef,
    Heading,
    Paragraph,
    Table,
    slug,
)

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto;
  max-width: 1100px; padding: 1.5em 2em 4em; color: #1d1d1f; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
h3 { margin-top: 1.6em; }
table { border-collapse: collapse; margin: .8em 0 1.2em; font-size: .9em; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: .3em 0; }
th, td { border: 1px solid #d0d0d0; padding: .3em .6em; vertical-align: top; }
th { background: #f2f2f4; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { background: #e3f4e1; }
td { word-break: break-word; }
.callout { border-left: 5px solid; padding: .6em 1em; margin: 1em 0; border-radius: 3px; }
.callout.warning { border-color: #c62828; background: #fdecea; font-weight: 600; }
.callout.note { border-color: #1565c0; background: #e8f0fb; }
.callout.not-run { border-color: #9e9e9e; background: #f4f4f4; font-style: italic; }
p.verdict { font-size: 1.02em; }
p.muted { color: #666; font-size: .88em; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
nav ul { columns: 2; }
.context { border: 2px dashed #b0a060; padding: 0 1.2em 1em; background: #fffdf3; }
"""


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
    sections = document.headings(2)
    if sections:
        out.append("<nav><ul>")
        for h in sections:
            out.append(f'<li><a href="#{_esc(h.anchor or slug(h.text))}">{_esc(h.text)}</a></li>')
        out.append("</ul></nav>")
    in_context = False
    for block in document.blocks:
        if isinstance(block, Heading):
            if block.level <= 2 and in_context:
                out.append("</div>")
                in_context = False
            anchor = block.anchor or slug(block.text)
            if block.level == 2 and anchor == "context":
                # the paper's numbers sit in a visibly separate box
                out.append('<div class="context">')
                in_context = True
            level = min(max(block.level, 1), 6)
            out.append(f'<h{level} id="{_esc(anchor)}">{_esc(block.text)}</h{level}>')
        elif isinstance(block, Paragraph):
            cls = f' class="{_esc(block.style)}"' if block.style else ""
            out.append(f"<p{cls}>{_esc(block.text)}</p>")
        elif isinstance(block, Callout):
            label = {"warning": "Warning: ", "note": "Note: ", "not-run": "Not run: "}[block.kind]
            out.append(
                f'<div class="callout {_esc(block.kind)}"><strong>{_esc(label)}</strong>'
                f"{_esc(block.text)}</div>"
            )
        elif isinstance(block, BulletList):
            out.append("<ul>" + "".join(f"<li>{_esc(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            out.append(_html_table(block))
        elif isinstance(block, FigureRef):
            out.append(_html_figure(block, figures.get(block.name)))
    if in_context:
        out.append("</div>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _html_table(t: Table) -> str:
    parts = ["<table>"]
    if t.caption:
        parts.append(f"<caption>{_esc(t.caption)}</caption>")
    parts.append(
        "<thead><tr>" + "".join(f"<th>{_esc(c)}</th>" for c in t.columns) + "</tr></thead>"
    )
    parts.append("<tbody>")
    for row in t.rows:
        cells = []
        for c in row:
            classes = " ".join(k for k, on in (("num", c.numeric), ("best", c.best)) if on)
            attr = f' class="{classes}"' if classes else ""
            text = f"<strong>{_esc(c.text)}</strong>" if c.strong or c.best else _esc(c.text)
            cells.append(f"<td{attr}>{text}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    return "\n".join(parts)


def _html_figure(ref: FigureRef, figure: Any) -> str:
    if figure is None:
        return (
            f'<div class="callout not-run"><strong>Not available: </strong>'
            f"figure {_esc(ref.name)} was not produced.</div>"
        )
    data = base64.b64encode(png_bytes(figure)).decode("ascii")
    return (
        f'<figure id="fig-{_esc(slug(ref.name))}"><img alt="{_esc(ref.caption)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{_esc(ref.caption)}</figcaption></figure>'
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
    """Markdown with pipe tables; figures link to ``<figures_dir>/<name>.png``."""
    lines = [f"# {md_escape(document.title)}", ""]
    sections = document.headings(2)
    if sections:
        lines += [f"- [{md_escape(h.text)}](#{h.anchor or slug(h.text)})" for h in sections]
        lines.append("")
    for block in document.blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 1), 6)
            anchor = block.anchor or slug(block.text)
            lines += [f'<a id="{anchor}"></a>', "", f"{'#' * level} {md_escape(block.text)}", ""]
        elif isinstance(block, Paragraph):
            text = md_escape(block.text)
            lines += [f"*{text}*" if block.style == "muted" else text, ""]
        elif isinstance(block, Callout):
            label = {"warning": "Warning", "note": "Note", "not-run": "Not run"}[block.kind]
            lines += [f"> **{label}:** {md_escape(block.text)}", ""]
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
    return "\n".join(lines).rstrip() + "\n"


def _md_table(t: Table) -> list[str]:
    lines = [f"**{md_escape(t.caption)}**", ""] if t.caption else []
    lines.append("| " + " | ".join(md_escape(c) for c in t.columns) + " |")
    aligns = []
    for i in range(len(t.columns)):
        numeric = any(len(r) > i and r[i].numeric for r in t.rows)
        aligns.append("---:" if numeric else "---")
    lines.append("| " + " | ".join(aligns) + " |")
    for row in t.rows:
        cells = [
            f"**{md_escape(c.text)}**" if c.strong or c.best else md_escape(c.text) for c in row
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
