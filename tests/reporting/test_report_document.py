"""The whole report from small inputs: content, best-cell marking, escaping, "not run"
notes, provenance, and a self-contained HTML page without external resources."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import ClassVar

import pytest

from d2v_pipeline.reporting import (
    build_document,
    build_figures,
    gather_inputs,
    report_config_from_dict,
    summarise_report,
    to_html,
    to_markdown,
)
from d2v_pipeline.reporting.inputs import ReportInputError
from d2v_pipeline.reporting.render import md_escape, png_bytes
from d2v_pipeline.reporting.stats import fraction_label


class _Collector(HTMLParser):
    """Records tags/attributes and checks the document is well nested."""

    VOID: ClassVar[set[str]] = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.text: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unbalanced </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def built(make_datasets):
    """One report (image complete, text with probe_final only) rendered with real figures."""
    datasets = make_datasets(collapsed=("image", "masked_recon"))
    # something that must be escaped, from a metadata string
    datasets["image.data2vec.pretrain_meta"]["deviations"].append(
        '<script>alert("x")</script> & <img src=http://evil/x.png>'
    )
    config = report_config_from_dict({})
    inputs = gather_inputs(datasets, git_commit="cafe123")
    summary = summarise_report(inputs, config)
    figures = {k: png_bytes(v) for k, v in build_figures(inputs, summary, config).items()}
    document = build_document(inputs, summary, figures.keys(), config)
    return {
        "datasets": datasets,
        "summary": summary,
        "figures": figures,
        "html": to_html(document, figures),
        "md": to_markdown(document, "figures"),
    }


def _parse(html: str) -> _Collector:
    parser = _Collector()
    parser.feed(html)
    parser.close()
    return parser


def test_html_parses_and_has_no_external_resources(built):
    parsed = _parse(built["html"])
    assert parsed.errors == []
    assert parsed.stack == []
    for tag, attrs in parsed.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed")
        for name in ("src", "href"):
            if name not in attrs:
                continue
            value = attrs[name] or ""
            assert not re.match(r"\s*(https?:)?//", value), (tag, attrs)
            if name == "src":
                assert value.startswith("data:image/png;base64,"), (tag, value[:40])
            if name == "href":
                assert value.startswith("#"), value
    images = [a for t, a in parsed.tags if t == "img"]
    assert len(images) == len(built["figures"])
    assert set(built["figures"]) == {
        "image_label_efficiency",
        "image_pretraining",
        "image_projection",
        "image_confusion_data2vec",
        "image_finetune_curves",
        "text_label_efficiency",  # text: no history, curves, projection or confusion
    }
    assert "<style>" in built["html"]


def test_every_modality_method_and_fraction_appears(built):
    text = " ".join(_parse(built["html"]).text)
    for m in ("image", "text"):
        metrics = built["datasets"][f"{m}.eval_metrics"]
        for method in metrics["method"].unique():
            assert method in text
            assert method.replace("_", r"\_") in built["md"]
        for fraction in metrics["fraction"].unique():
            assert fraction_label(fraction) in text
        assert f"{m}: results" in text and f"{m}: results" in built["md"]


def test_best_cells_are_marked_in_html_and_markdown(built):
    # fixture levels: data2vec is best in every protocol; raw_input (higher) is context only
    html = built["html"]
    best = re.findall(r'<td class="num best"><strong>([^<]+)</strong></td>', html)
    # score tables: image 2 metrics x 3 protocols x 3 fractions, text 2 x 1 x 3; the
    # headline table: one per protocol at 10% (image 3, text 1)
    assert len(best) == 18 + 6 + 4
    table = built["summary"].table
    row = table[
        (table["modality"] == "image")
        & (table["method"] == "data2vec")
        & (table["protocol"] == "finetune")
        & (table["metric"] == "accuracy")
        & (table["fraction"] == 0.1)
    ].iloc[0]
    expected = f"{row['mean'] * 100:.1f} ± {row['std'] * 100:.1f}"
    assert best.count(expected) == 2  # score table and headline table
    assert f"| **{expected}** |" in built["md"]
    # raw_input scores higher but is context: its rows are never marked
    raw_rows = re.findall(
        r'<tr><td class="name">raw-input probe</td><td class="name">raw_input \(context\)</td>'
        r".*?</tr>",
        html,
    )
    assert len(raw_rows) == 4  # 2 modalities x 2 metrics
    assert not any("best" in r for r in raw_rows)


def _section(html: str, anchor: str) -> str:
    """The HTML from the h2 with ``id=anchor`` to the next h2."""
    start = html.index(f'<h2 id="{anchor}">')
    end = html.find("<h2 ", start + 1)
    return html[start : end if end > 0 else len(html)]


def _comparison(summary, modality, protocol, method, baseline, fraction=0.1):
    return next(
        c
        for c in summary.modalities[modality].comparisons
        if (c.protocol, c.method, c.baseline, c.metric) == (protocol, method, baseline, "accuracy")
        and c.fraction == fraction
    )


def test_headline_table_and_one_sentence_per_modality(built):
    section = _section(built["html"], "summary")
    assert "<caption>Test accuracy (%) at 10% labels</caption>" in section
    iv = _comparison(built["summary"], "image", "finetune", "data2vec", "scratch").interval
    # the headline cell: difference to scratch with its interval, bold (the CI excludes 0)
    delta = f"+{iv.mean * 100:.1f} ({iv.low * 100:.1f} to {iv.high * 100:.1f})"
    assert f'<td class="num"><strong>{delta}</strong></td>' in section
    assert '<td class="group" colspan="4">image (n = 100): fine-tuning</td>' in section
    # one sentence per modality, naming the best arm with its score and its gap to scratch
    sentences = re.findall(r'<p class="verdict">([^<]+)</p>', section)
    assert [s.split(" ")[0] for s in sentences] == ["image", "text"]
    assert sentences[0].startswith("image (10% labels): data2vec scores best, by fine-tuning (")
    assert f"+{iv.mean * 100:.1f} over scratch, 95% CI" in sentences[0]
    assert "the raw-input probe (" in sentences[0] and "beats every encoder" in sentences[0]
    # every other method is compared with scratch too (not only the data2vec family)
    mr = _comparison(built["summary"], "image", "finetune", "masked_recon", "scratch").interval
    assert f"{mr.mean * 100:+.1f} ({mr.low * 100:.1f} to {mr.high * 100:.1f})" in section


def test_verdict_sentences_move_to_a_collapsed_appendix(built):
    html, md = built["html"], built["md"]
    appendix = _section(html, "appendix")
    assert appendix.count("<details>") == 4  # per modality: sentences and the full table
    n_image = sum(
        c.metric == "accuracy" and c.fraction == 0.1
        for c in built["summary"].modalities["image"].comparisons
    )
    assert re.search(
        rf"<summary>image: the {n_image} comparisons at 10% labels in words \(", appendix
    )
    text = " ".join(_parse(appendix).text)
    iv = _comparison(built["summary"], "image", "probe_final", "data2vec", "scratch").interval
    assert re.search(
        rf"data2vec \([^)]*\) beats scratch \([^)]*\) by {iv.mean * 100:.1f} points \(95% CI", text
    )
    assert re.search(r"data2vec \([^)]*\) loses to raw_input \(raw-input probe\)", text)
    assert "beats scratch (" not in _section(html, "summary")
    # Markdown: the appendix is a normal section, each collapsed block a heading
    assert "## Appendix: every comparison" in md
    assert f"### image: the {n_image} comparisons at 10% labels in words" in md


def test_document_opens_with_title_run_header_and_the_answer(built):
    html = built["html"]
    assert "<title>data2vec vs baselines — images, text — base experiment</title>" in html
    order = [
        html.index("<h1>"),
        html.index("<caption>This run</caption>"),
        html.index("Scores are test-set"),
        html.index('<h2 id="summary">'),
        html.index("<nav>"),
        html.index('<h2 id="results-image">'),
        html.index('<h2 id="provenance">'),
        html.index('<h2 id="appendix">'),
    ]
    assert order == sorted(order)
    header = html[order[1] : order[3]]
    for expected in (
        "base",
        "2026-11-28 10:00:00 UTC",
        "kedro run",
        "abc1234, clean tree at the start of the run",
        "encoder D 48, 3 blocks, 2 heads",
        "seeds 0, 1, 2; label fractions 1%, 10%, 100%",
        "40 s (sum of the last recorded time of 2 nodes)",
    ):
        assert expected in header, expected
    assert html.count("Scores are test-set") == 1  # what the intervals cover: said once
    assert 'class="callout banner"' not in html  # the base run has no banner


def test_missing_protocols_and_inputs_show_not_run(built):
    html, md = built["html"], built["md"]
    text = " ".join(_parse(html).text)
    assert "fine-tuning (finetune) was not run for text" in text
    assert "fine-tuning curves (text.finetune_curves): no data, figure not produced." in text
    assert "Not run:" in html and "**Not run:**" in md


def test_provenance_collapse_paper_context_and_escaping(built):
    html, md = built["html"], built["md"]
    text = " ".join(_parse(html).text)
    # params diff lists the changed key with both values
    assert re.search(r"image\.pretrain\.train\.steps\s*</td><td>5</td><td>2000", html)
    assert "image\\.pretrain\\.train\\.steps" not in md  # dots are not escaped in Markdown
    assert "image.pretrain.train.steps | 5 | 2000" in md
    # collapse is a prominent warning
    assert '<div class="callout warning">' in html
    assert "representation collapse in pretraining run image/masked_recon at step 120" in text
    # paper numbers are quoted with their source tags in their own section
    assert "Context: what the paper reports (not measured here)" in text
    assert "[P1 T1]" in text and "84.2" in text
    # node timings with total, commit, data hash
    assert "total" in text and "40.0" in text
    assert "cafe123" in text and "hash-image" in text
    # hostile strings are escaped, never live markup
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<img src=http" not in html
    assert "&lt;script&gt;" in md


def test_markdown_links_every_figure_relatively(built):
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", built["md"])
    assert sorted(links) == sorted(f"figures/{name}.png" for name in built["figures"])


def _benchmark_json() -> dict:
    """A small time-to-accuracy benchmark result (benchmarks/time_to_accuracy.py's layout)."""

    def run(method, accs):
        points = [
            {"train_s": 30.0 * (i + 1), "final": {"test_accuracy": a}} for i, a in enumerate(accs)
        ]
        return {"modality": "image", "method": method, "points": points}

    return {
        "finished": "2026-01-01T00:00:00Z",
        "note": "measured on a test fixture",
        "random_init": {"image": {"final": {"test_accuracy": 0.5}}},
        "runs": [run("data2vec", [0.52, 0.55]), run("data2vec2", [0.61, 0.66])],
        "summary": {
            "image": {
                "final/test_accuracy": {
                    "random_init": 0.5,
                    "best_data2vec": 0.55,
                    "best_data2vec2": 0.66,
                    "v1_time_to_best_s": 60.0,
                    "v2_time_to_v1_best_s": 30.0,
                    "v2_over_v1_time": 0.5,
                }
            }
        },
    }


def test_time_to_accuracy_benchmark_section(make_datasets, built):
    # without the benchmark JSON the section says how to produce it
    assert "accuracy.json not found" in built["md"]
    assert "time_to_accuracy" not in built["figures"]
    datasets = make_datasets()
    datasets["time_to_accuracy"] = _benchmark_json()
    config = report_config_from_dict({})
    inputs = gather_inputs(datasets)
    summary = summarise_report(inputs, config)
    figures = build_figures(inputs, summary, config)
    assert "time_to_accuracy" in figures
    md = to_markdown(build_document(inputs, summary, figures.keys(), config), "figures")
    section = md.split("## Time to accuracy (benchmark)")[1].split("\n## ")[0]
    assert "| image | 60 s | 55.0 | 66.0 | n/a | 50.0 | 30 s = 0.50 x v1's 60 s |" in section
    assert "(figures/time_to_accuracy.png)" in section


def test_bad_time_to_accuracy_json_names_the_run_and_key(make_datasets):
    bad = _benchmark_json()
    del bad["runs"][1]["points"][0]["final"]
    with pytest.raises(ReportInputError, match=r"time_to_accuracy: runs\[1\]\.points\[0\]"):
        gather_inputs({"time_to_accuracy": bad})
    assert gather_inputs({"time_to_accuracy": {}}).time_to_accuracy is None


def _render(datasets, figures=None) -> tuple[str, str]:
    config = report_config_from_dict({})
    inputs = gather_inputs(datasets, git_commit="cafe123")
    summary = summarise_report(inputs, config)
    names = list(figures or ())
    document = build_document(inputs, summary, names, config)
    return to_html(document, figures or {}), to_markdown(document, "figures")


SMOKE_INFO = {"env": "smoke", "command": "kedro run --env smoke", "git_commit": None}


def test_smoke_run_is_titled_and_bannered_and_states_its_own_sizes(make_datasets):
    html, md = _render(make_datasets(run_info=SMOKE_INFO))
    title = "data2vec vs baselines — images, text — SMOKE RUN (tiny sizes, not results)"
    assert f"<h1>{title}</h1>" in html and md.startswith(f"# {title}\n")
    assert '<div class="callout banner">SMOKE RUN: ' in html
    assert "not a git checkout" in html
    # deviations come from the run's own config (D 48 / 3 blocks), never a hard-coded size
    deviations = _section(html, "provenance").split("Deviations from the paper (as run)")[1]
    assert "image: encoder D 48, 3 blocks, 2 heads, FFN 96 (paper Base: D 768" in deviations
    assert "D 128" not in deviations  # the metadata's sized note is replaced
    assert "image-only note (image/data2vec, image/masked_recon)" in deviations


def test_without_run_info_the_header_says_not_recorded(make_datasets):
    datasets = make_datasets()
    datasets["run_info"] = {}  # an old run: the catalog's default for a missing file
    html, _ = _render(datasets)
    header = html.split("<caption>This run</caption>")[1].split("</table>")[0]
    assert header.count("not recorded (no run_info.json") == 4  # env, started, command, code
    assert "<h1>data2vec vs baselines — images, text</h1>" in html


def test_partial_report_names_the_missing_lanes_and_the_command(make_datasets):
    datasets = make_datasets(modalities=("image", "speech", "text"), run_info=SMOKE_INFO)
    for key in [k for k in datasets if k.startswith(("speech.", "text."))]:
        datasets[key] = None  # `kedro run --namespaces image` only: the files are missing
    html, md = _render(datasets)
    assert "<h1>data2vec vs baselines — images (speech, text not run) — SMOKE RUN" in html
    command = (
        "`kedro run --env smoke --namespaces speech,text`, then "
        "`kedro run --env smoke --pipelines report`"
    )
    assert command in html
    assert md_escape(command) in md
    assert "lanes speech, text: no speech.eval_metrics, text.eval_metrics" in html
    assert 'id="results-image"' in html
    assert 'id="results-speech"' not in html and 'id="results-text"' not in html


def test_empty_score_cells_say_why(make_datasets):
    datasets = make_datasets()
    metrics = datasets["image.eval_metrics"]
    finetune = metrics["protocol"] == "finetune"
    datasets["image.eval_metrics"] = metrics[~finetune | (metrics["fraction"] == 0.1)]
    datasets["parameters"]["image"]["finetune"] = {"finetune_fractions": [0.1]}
    html, md = _render(datasets)
    why = "fine-tuned only at 10% labels (image.finetune.finetune_fractions)"
    table = _section(html, "results-image").split("by label fraction</caption>")[1]
    assert table.count(f'<td class="num" title="{why}">–<sup class="fn">a</sup></td>') == 6
    assert f'<p class="table-note">a: {why}</p>' in table
    assert f"*(a) {md_escape(why)}*" in md and "| – (a) |" in md


def test_a_zero_width_interval_supports_no_verdict(make_metrics):
    # without jitter every seed gives the same difference: a zero-width interval
    metrics = make_metrics("image", fractions=(0.1,), protocols=("probe_final",), raw=False)
    html, _ = _render({"image.eval_metrics": metrics})
    appendix = " ".join(_parse(_section(html, "appendix")).text)
    assert "with a zero-width interval (95% CI 15.0 to 15.0" in appendix
    assert "no verdict" in appendix and "beats" not in appendix
    assert "n/a (zero-width interval)" in appendix
    assert "<strong>+15.0" not in html  # never bold in the headline table


def test_each_data_hash_is_written_once(built):
    data = _section(built["html"], "provenance").split('<h3 id="data">Data</h3>')[1]
    data = data.split("<h3")[0]
    assert data.count("hash-image") == 1
    assert '<td class="code">data2vec, masked_recon: same</td>' in data


def test_tables_scroll_and_figures_open_full_size_within_the_page(built):
    html = built["html"]
    assert html.count("<table>") == html.count('<div class="table-wrap"><table>') > 10
    ids = set(re.findall(r'\bid="([^"]+)"', html))
    for href in re.findall(r'href="#([^"]*)"', html):
        assert href in ids, href
    figures = re.findall(r'<figure id="([^"]+)"[^>]*>(.*?)</figure>', html, re.S)
    assert len(figures) == len(built["figures"])
    for fig_id, body in figures:
        # the image sits in a link to its own figure's full-size (:target) view
        assert re.search(rf'<a class="zoom" href="#{fig_id}"[^>]*><img ', body), fig_id
        assert fig_id.endswith("-full")
    assert "figure:target img { max-width: none;" in html
    assert '<figure id="fig-image-confusion-data2vec-full" class="compact">' in html
    assert "figure.compact img { max-height: 350px;" in html


def test_details_summaries_and_cell_notes_are_escaped():
    from d2v_pipeline.reporting.document import Cell, Details, Document, Table

    hostile = '<script>alert("x")</script>'
    cell = Cell("–", note=hostile)
    doc = Document("t", [Details(hostile, (Table(("a",), ((cell,),)),))])
    html, md = to_html(doc), to_markdown(doc)
    assert "<script>" not in html
    assert (
        html.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") == 3
    )  # summary, title, note
    assert "<script>" not in md and "### &lt;script&gt;" in md
