"""The report's HTML template (reporting/templates): hostile text anywhere in the document
model comes out escaped exactly once, a template variable that is missing is an error, and
the templates are the ones the package ships."""

from __future__ import annotations

import html
import re
import tomllib
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import pytest

from d2v_pipeline.reporting import (
    build_document,
    gather_inputs,
    report_config_from_dict,
    summarise_report,
    to_html,
)
from d2v_pipeline.reporting.document import (
    BulletList,
    Callout,
    Cell,
    Details,
    Document,
    FigureRef,
    Heading,
    Paragraph,
    Table,
)
from d2v_pipeline.reporting.render import escape_html, html_environment

TEMPLATES = Path(__file__).parents[2] / "src" / "d2v_pipeline" / "reporting" / "templates"
PYPROJECT = Path(__file__).parents[2] / "pyproject.toml"

# markup, an attribute break-out, an entity that must stay literal text, a table
# break-out, and non-ASCII text (written as itself, the page is UTF-8) with quotes
HOSTILE = (
    "<script>alert(1)</script>",
    '" onload="alert(2)',
    "&amp; <b>x</b>",
    "</td></tr></table><td>",
    "Ünïcödé — αβγ ✕ 日本語 'it's' & <",
)
PNG = b"\x89PNG\r\n\x1a\n"  # only embedded, never decoded


class _Page(HTMLParser):
    """Start tags with their (unescaped) attributes, and the (unescaped) text."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.ends: list[str] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        self.ends.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def _assert_inert(page: str) -> _Page:
    """No script element and no event-handler attribute anywhere in the page."""
    parsed = _Page(page)
    assert [t for t, _ in parsed.tags if t in ("script", "b")] == []
    handlers = [(t, a) for t, attrs in parsed.tags for a in attrs if a.startswith("on")]
    assert handlers == []
    return parsed


def _every_block(text: str) -> Document:
    """A document with ``text`` in every place a block holds text (heading, paragraph,
    callout, list item, table caption/column/cell/cell note/table note, figure caption,
    details summary), a figure that exists and one that does not."""
    table = Table(
        columns=("method", text),
        rows=(
            (Cell(text, kind="name"), Cell("1.0", numeric=True, best=True, note=text)),
            (Cell(text, kind="group", span=2),),
        ),
        caption=text,
        notes=(text,),
    )
    inner = (Heading(text, 3), Paragraph(text, "muted"), table, FigureRef("curve", text))
    blocks = [
        Heading(text),
        Paragraph(text),
        Callout("warning", text),
        BulletList((text, "plain")),
        table,
        FigureRef("missing", text),
        Details(text, inner),
    ]
    return Document(text, blocks)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_text_in_every_block_is_escaped_once(hostile):
    page = to_html(_every_block(hostile), {"curve": PNG})
    parsed = _assert_inert(page)
    # escaped exactly once: the browser reads back the very string the model held
    text = "".join(parsed.text)
    # title, h1, h2, p, callout, li, caption, th, td x2, table note, footnote, "not
    # available" note, summary, and in <details>: h3, p, table (7), figcaption
    assert text.count(hostile) == 23
    attrs = [v for _, a in parsed.tags for k, v in a.items() if k in ("title", "alt")]
    assert attrs.count(hostile) == 3  # two cell tooltips and the image's alt text
    assert html.escape(hostile, quote=True) in page
    assert html.escape(html.escape(hostile, quote=True)) not in page  # never twice
    # the model's structure is real markup (a macro's output is not escaped again)
    tags = [t for t, _ in parsed.tags]
    for tag in ("nav", "h2", "p", "div", "ul", "table", "td", "sup", "details", "figure", "img"):
        assert tag in tags, tag
    assert tags.count("table") == 2 and tags.count("summary") == 1
    # no text closes or opens a table element: every one the page opens, it closes
    for tag in ("table", "tr", "td", "th"):
        assert tags.count(tag) == parsed.ends.count(tag), tag
    assert tags.count("td") == 6 and tags.count("th") == 4


def test_a_hostile_method_name_is_escaped_throughout_the_report(make_metrics):
    """A method name from the metrics table reaches headings, tables and sentences."""
    hostile = '<script>alert(1)</script>" onload="x'
    metrics = make_metrics("image", protocols=("probe_final",), jitter=True)
    metrics["method"] = metrics["method"].replace("masked_recon", hostile)
    config = report_config_from_dict({})
    inputs = gather_inputs({"image.eval_metrics": metrics})
    summary = summarise_report(inputs, config)
    page = to_html(build_document(inputs, summary, [], config))
    parsed = _assert_inert(page)
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", page)
    assert html.escape(hostile) in cells  # its own row in the score table
    assert hostile in "".join(parsed.text)


def test_escaping_spells_entities_as_html_escape_does():
    # the report's entity spelling (&quot; &#x27;), not MarkupSafe's (&#34; &#39;)
    assert escape_html("<a href=\"x\">'&'</a>") == (
        "&lt;a href=&quot;x&quot;&gt;&#x27;&amp;&#x27;&lt;/a&gt;"
    )
    env = html_environment()
    assert env.from_string("<p title='{{ v }}'>{{ v }}</p>").render(v="'<i>") == (
        "<p title='&#x27;&lt;i&gt;'>&#x27;&lt;i&gt;</p>"
    )
    # a macro's output is markup: it is kept, not escaped a second time
    macro = "{% macro b(t) %}<b>{{ t }}</b>{% endmacro %}{{ b(v) }}"
    assert env.from_string(macro).render(v="<i>") == "<b>&lt;i&gt;</b>"


def test_a_missing_variable_or_attribute_fails_loudly():
    env = html_environment()
    page = env.get_template("report.html.j2")
    with pytest.raises(jinja2.UndefinedError, match="title"):
        page.render(blocks=[], sections=[], figures={})
    with pytest.raises(jinja2.UndefinedError, match="no_such_field"):
        env.from_string("{{ block.no_such_field }}").render(block=Heading("x"))
    # a callout kind without a label is an error, not an unlabelled box
    with pytest.raises(jinja2.UndefinedError):
        to_html(Document("t", [Callout("alarm", "x")]))  # type: ignore[arg-type]
    # a block type the template does not know is an error, not a silent gap in the page
    with pytest.raises(TypeError, match="no template for a block of type str"):
        to_html(Document("t", ["a plain string"]))  # type: ignore[list-item]


def test_templates_are_autoescaped_and_mark_nothing_safe():
    env = html_environment()
    assert env.autoescape is True
    assert env.undefined is jinja2.StrictUndefined
    for path in TEMPLATES.iterdir():
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"\|\s*safe\b|Markup|autoescape\s+false", source), path.name


def test_the_package_ships_every_template():
    """What the loader finds is what is on disk, and pyproject's package data (the wheel)
    covers every file of the templates folder."""
    on_disk = sorted(p.name for p in TEMPLATES.iterdir() if p.is_file())
    assert on_disk == sorted(html_environment().list_templates())
    assert {"report.html.j2", "blocks.html.j2", "report.css.j2"} <= set(on_disk)
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["d2v_pipeline"]
    shipped = [
        name
        for name in on_disk
        if any(fnmatch(f"reporting/templates/{name}", pattern) for pattern in patterns)
    ]
    assert shipped == on_disk


def test_the_markdown_anchor_is_escaped_too():
    """The Markdown's one HTML element (a heading's ``<a id>``) escapes its anchor, and the
    contents link to it escapes it the same way (entities decode to the same id)."""
    from d2v_pipeline.reporting import to_markdown

    md = to_markdown(Document("t", [Heading("Results", anchor='x"><script>alert(1)</script>')]))
    assert "<script>" not in md
    escaped = "x&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f'<a id="{escaped}"></a>' in md and f"- [Results](#{escaped})" in md
    assert '<a id="results"></a>' in to_markdown(Document("t", [Heading("Results")]))


def test_the_page_keeps_its_layout_one_line_per_block():
    """The invariants that keep the page what it was before the templates (same bytes for
    the same document): no indentation or blank line from the templates' own layout, one
    line per table row, list and figure, the style sheet verbatim, the paper's context in
    its own box that the next section closes, and a trailing newline."""
    doc = Document(
        "Ünïcödé <t>",
        [
            Heading("Results"),
            BulletList(("a", "b")),
            Heading("Context"),  # its anchor is "context": boxed until the next section
            Paragraph("paper numbers"),
            Details("more", (Heading("Context", 2), Paragraph("inside"))),  # never boxed
            Heading("Provenance"),
            Table(("k", "v"), ((Cell("x"), Cell("1", numeric=True)),) * 2, caption="c"),
            FigureRef("curve", "a curve", compact=True),
            Heading("inner", 3),
        ],
    )
    page = to_html(doc, {"curve": PNG})
    lines = page.split("\n")
    assert lines[:4] == ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">']
    assert page.endswith("</body>\n</html>\n")
    assert "<title>Ünïcödé &lt;t&gt;</title>" in lines
    assert "" not in lines[:-1]
    css = (TEMPLATES / "report.css.j2").read_text(encoding="utf-8").split("-#}\n", 1)[1]
    assert f"<style>\n{css}</style>" in page  # verbatim, its template comment dropped
    body = lines[lines.index("<body>") + 1 : lines.index("</body>")]
    assert all(line and not line[0].isspace() for line in body)
    assert body[:2] == [
        "<h1>Ünïcödé &lt;t&gt;</h1>",
        '<nav><ul><li><a href="#results">Results</a>'
        '</li><li><a href="#context">Context</a></li><li><a href="#provenance">'
        "Provenance</a></li></ul></nav>",
    ]
    assert "<ul><li>a</li><li>b</li></ul>" in body
    assert body.count('<tr><td>x</td><td class="num">1</td></tr>') == 2
    figure = [line for line in body if line.startswith('<span id="fig-curve">')]
    assert len(figure) == 1 and figure[0].endswith("</figure>")
    assert '<figure id="fig-curve-full" class="compact">' in figure[0]
    # the context box opens before its heading and closes before the next section's
    start = body.index('<div class="context">')
    assert body[start + 1] == '<h2 id="context">Context</h2>'
    assert body[body.index('<h2 id="provenance">Provenance</h2>') - 1] == "</div>"
    assert body.count('<div class="context">') == body.count("</div>") == 1
