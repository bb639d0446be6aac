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
from d2v_pipeline.reporting.render import png_bytes
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
    # image: 2 metrics x 3 protocols x 3 fractions; text: 2 metrics x 1 protocol x 3 fractions
    assert len(best) == 18 + 6
    table = built["summary"].table
    row = table[
        (table["modality"] == "image")
        & (table["method"] == "data2vec")
        & (table["protocol"] == "finetune")
        & (table["metric"] == "accuracy")
        & (table["fraction"] == 0.1)
    ].iloc[0]
    expected = f"{row['mean'] * 100:.1f} ± {row['std'] * 100:.1f}"
    assert expected in best
    assert f"| **{expected}** |" in built["md"]
    # raw_input scores higher but is context: its rows are never marked
    raw_rows = re.findall(
        r"<tr><td>raw-input probe</td><td>raw_input \(context\)</td>.*?</tr>", html
    )
    assert len(raw_rows) == 4  # 2 modalities x 2 metrics
    assert not any("best" in r for r in raw_rows)


def test_headline_says_who_wins_with_an_interval(built):
    text = " ".join(_parse(built["html"]).text)
    assert "Summary: does data2vec beat the baselines?" in text
    assert re.search(r"data2vec \([^)]*\) beats scratch \([^)]*\) by 15\.0 points \(95% CI", text)
    assert re.search(r"data2vec \([^)]*\) loses to raw_input \(raw-input probe\)", text)


def test_missing_protocols_and_inputs_show_not_run(built):
    html, md = built["html"], built["md"]
    text = " ".join(_parse(html).text)
    assert "fine-tuning: not run (no finetune rows)" in text
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
