"""The report's content: answers "does data2vec beat the baselines here, by how much, and
how sure are we?", then shows the evidence, the paper's numbers as context, and provenance.

Sections are small functions appending blocks to a :class:`Document`; a later section
(e.g. tuning) is one more function called from :func:`build_document`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from d2v_pipeline.reporting import paper, provenance
from d2v_pipeline.reporting.config import ReportConfig
from d2v_pipeline.reporting.document import (
    BulletList,
    Callout,
    Cell,
    Document,
    FigureRef,
    Heading,
    Paragraph,
    Table,
    table,
)
from d2v_pipeline.reporting.inputs import ReportInputs
from d2v_pipeline.reporting.provenance import RunStatus
from d2v_pipeline.reporting.stats import (
    Comparison,
    ModalitySummary,
    ReportSummary,
    fraction_label,
    ordered,
)

MODALITY_ORDER = ("image", "speech", "text")


def build_document(
    inputs: ReportInputs,
    summary: ReportSummary,
    figure_names: Collection[str],
    config: ReportConfig,
) -> Document:
    """The whole report as a format-neutral :class:`Document`.

    ``figure_names`` are the figures that exist (keys of the figures dict); others are
    reported as "not run" instead of linked.
    """
    doc = Document(title=config.title)
    statuses = provenance.run_statuses(inputs, config.method_order)
    _intro(doc, inputs, summary, statuses, config)
    _headline_section(doc, inputs, summary, statuses, config)
    for modality in ordered(inputs.modalities, MODALITY_ORDER):
        _modality_section(doc, inputs, summary, modality, set(figure_names), statuses, config)
    _time_to_accuracy_section(doc, inputs, set(figure_names))
    _paper_section(doc)
    _provenance_section(doc, inputs, statuses, config)
    return doc


# ---------------------------------------------------------------- formatting helpers


VERDICT_LABELS = {
    "win": "better",
    "loss": "worse",
    "tie": "unclear (CI spans 0)",
    "n/a": "n/a (< 2 seeds)",
}


def points(value: float | None, decimals: int = 1) -> str:
    """A 0..1 score as percentage points; NaN -> 'n/a' (and never '-0.0')."""
    if value is None or math.isnan(value):
        return "n/a"
    # -0.04 rounds to -0.0; adding 0.0 turns IEEE negative zero into 0.0
    return f"{round(value * 100, decimals) + 0.0:.{decimals}f}"


def signed_points(value: float, decimals: int = 1) -> str:
    if math.isnan(value):
        return "n/a"
    text = points(value, decimals)
    return text if text.startswith("-") else f"+{text}"


def mean_std(mean: float, std: float, n: int | None, decimals: int) -> str:
    """'62.8 ± 0.9', with ' (n=3)' when ``n`` is given; with one seed no ± is shown."""
    text = points(mean, decimals)
    if std is not None and not math.isnan(std):
        text += f" ± {points(std, decimals)}"
    return text + (f" (n={n})" if n is not None else "")


def _ci_text(c: Comparison, config: ReportConfig) -> str:
    iv = c.interval
    if not iv.available:
        return "n/a"
    return f"{points(iv.low, config.decimals)} to {points(iv.high, config.decimals)}"


def _baseline_name(c: Comparison, config: ReportConfig) -> str:
    if c.baseline_protocol == c.protocol:
        return c.baseline
    return f"{c.baseline} ({config.protocol_label(c.baseline_protocol)})"


def verdict_sentence(c: Comparison, config: ReportConfig) -> str:
    """One comparison said plainly, whichever way it falls, e.g. "data2vec (47.0 ± 1.1)
    loses to scratch (50.0 ± 0.8) by 3.0 points (95% CI 1.2 to 4.8; 3 paired seeds),
    more than the spread over seeds (std up to 1.1)."."""
    d = config.decimals
    iv = c.interval
    a = f"{c.method} ({mean_std(c.method_mean, c.method_std, None, d)})"
    b = f"{_baseline_name(c, config)} ({mean_std(c.baseline_mean, c.baseline_std, None, d)})"
    level = f"{config.confidence * 100:g}% CI"
    if iv.kind == "welch":
        basis = "seeds do not pair up: Welch interval"
    else:
        basis = f"{iv.n} paired seed{'' if iv.n == 1 else 's'}"
    if c.verdict == "n/a":
        if math.isnan(iv.mean):
            return f"{a} vs {b}: no comparison possible."
        direction = "ahead of" if iv.mean >= 0 else "behind"
        return (
            f"{a} is {direction} {b} by {points(abs(iv.mean), d)} points, but with {basis} "
            f"there is no confidence interval ({level} n/a): too few seeds to judge."
        )
    ci = f"{level} {_ci_text(c, config)}; {basis}"
    if c.verdict == "tie":
        return (
            f"{a} vs {b}: {signed_points(iv.mean, d)} points, not distinguishable from zero ({ci})."
        )
    if c.verdict == "win":
        text = f"{a} beats {b} by {points(iv.mean, d)} points ({ci})"
    else:
        # the gap is stated as a positive number, so its interval is too: -(high)..-(low)
        gap_ci = f"{level} {points(-iv.high, d)} to {points(-iv.low, d)}; {basis}"
        text = f"{a} loses to {b} by {points(-iv.mean, d)} points ({gap_ci})"
    if not math.isnan(c.spread):
        relation = "more" if abs(iv.mean) > c.spread else "less"
        text += f", {relation} than the spread over seeds (std up to {points(c.spread, d)})"
    return text + "."


# ---------------------------------------------------------------- sections


def _intro(
    doc: Document,
    inputs: ReportInputs,
    summary: ReportSummary,
    statuses: list[RunStatus],
    config: ReportConfig,
) -> None:
    commit = inputs.git_commit or "unknown (not a git checkout)"
    doc.add(
        Paragraph(
            f"Git commit {commit}. Scores are test-set {config.primary_metric} in percent; "
            "± is the sample standard deviation over seeds (each seed is a different "
            "labelled subset and classifier initialisation); differences are in percentage "
            f"points with {config.confidence * 100:g}% t-intervals, paired by seed.",
            style="muted",
        )
    )
    for text in _collapse_warnings(statuses, config):
        doc.add(Callout("warning", text))
    if not any(ms.fractions for ms in summary.modalities.values()):
        doc.add(Callout("not-run", "no evaluation results were found for any modality."))


def _collapse_warnings(statuses: list[RunStatus], config: ReportConfig) -> list[str]:
    """Spec §9: a collapsed run (flagged, or final stds under the thresholds) is prominent."""
    out = []
    for s in statuses:
        name = f"{s.modality}/{s.method}"
        if s.collapsed:
            step = f" at step {s.collapse_step}" if s.collapse_step is not None else ""
            out.append(
                f"representation collapse in pretraining run {name}{step} (final target std "
                f"{_fmt(s.final_target_std)}, prediction std {_fmt(s.final_pred_std)}). Its "
                "encoder's results below are not a fair measure of the method."
            )
            continue
        low = []
        if s.final_target_std is not None and s.final_target_std < config.collapse_target_std:
            low.append(f"target std {_fmt(s.final_target_std)} < {config.collapse_target_std:g}")
        if s.final_pred_std is not None and s.final_pred_std < config.collapse_pred_std:
            low.append(f"prediction std {_fmt(s.final_pred_std)} < {config.collapse_pred_std:g}")
        if low:
            out.append(
                f"pretraining run {name} is not flagged as collapsed, but its final "
                f"{' and '.join(low)} (the spec §9 collapse thresholds)."
            )
    return out


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def _headline_section(
    doc: Document,
    inputs: ReportInputs,
    summary: ReportSummary,
    statuses: list[RunStatus],
    config: ReportConfig,
) -> None:
    collapsed = {(s.modality, s.method) for s in statuses if s.collapsed}
    doc.add(Heading("Summary: does data2vec beat the baselines?", 2, "summary"))
    doc.add(
        Paragraph(
            f"At {fraction_label(config.headline_fraction)} labels, per modality and protocol: "
            f"a method wins or loses only when the {config.confidence * 100:g}% confidence "
            "interval of its per-seed difference excludes zero.",
            style="muted",
        )
    )
    for modality in ordered(inputs.modalities, MODALITY_ORDER):
        ms = summary.modalities[modality]
        doc.add(Heading(modality, 3, f"summary-{modality}"))
        if ms.headline_fraction is None:
            doc.add(Callout("not-run", f"no evaluation results in {modality}.eval_metrics."))
            continue
        frac = ms.headline_fraction
        if not math.isclose(frac, config.headline_fraction):
            doc.add(
                Callout(
                    "note",
                    f"no results at {fraction_label(config.headline_fraction)} labels; "
                    f"the closest evaluated fraction, {fraction_label(frac)}, is used.",
                )
            )
        focus = [m for m in ms.methods if m in config.focus_methods]
        if not focus:
            doc.add(Callout("not-run", f"no data2vec results in {modality}.eval_metrics."))
            continue
        at = [
            c
            for c in ms.comparisons
            if c.metric == config.primary_metric and math.isclose(c.fraction, frac)
        ]
        sentences, tally = [], dict.fromkeys(VERDICT_LABELS, 0)
        for protocol in config.headline_protocols:
            label = config.protocol_label(protocol)
            if protocol not in ms.protocols:
                sentences.append(f"{label}: not run (no {protocol} rows).")
                continue
            in_protocol = [c for c in at if c.protocol == protocol]
            if not in_protocol:
                sentences.append(f"{label}: no baseline to compare with.")
            for c in in_protocol:
                sentence = f"{label}: {verdict_sentence(c, config)}"
                flagged = [m for m in (c.method, c.baseline) if (modality, m) in collapsed]
                if flagged:
                    sentence += f" Caution: {' and '.join(flagged)} collapsed in pretraining."
                sentences.append(sentence)
                tally[c.verdict] += 1
        counted = sum(tally.values())
        words = {
            "win": ("win", "wins"),
            "loss": ("loss", "losses"),
            "tie": ("unclear", "unclear"),
            "n/a": ("without enough seeds", "without enough seeds"),
        }
        parts = [f"{v} {words[k][v != 1]}" for k, v in tally.items() if v]
        if counted:
            doc.add(
                Paragraph(
                    f"{modality}, {fraction_label(frac)} labels — {' / '.join(focus)} against "
                    f"the baselines: {', '.join(parts)} out of {counted} comparisons.",
                    style="verdict",
                )
            )
        doc.add(BulletList(tuple(sentences)))


def _comparison_row(c: Comparison, config: ReportConfig, with_modality: bool) -> list[Any]:
    row: list[Any] = [c.modality] if with_modality else []
    row += [
        config.protocol_label(c.protocol),
        fraction_label(c.fraction),
        f"{c.method} − {_baseline_name(c, config)}",
        Cell(signed_points(c.interval.mean, config.decimals), numeric=True),
        Cell(_ci_text(c, config), numeric=True),
        Cell(f"{c.interval.n}" + (" (Welch)" if c.interval.kind == "welch" else ""), numeric=True),
        Cell(VERDICT_LABELS[c.verdict], strong=c.verdict in ("win", "loss")),
    ]
    return row


def _modality_section(
    doc: Document,
    inputs: ReportInputs,
    summary: ReportSummary,
    modality: str,
    figures: set[str],
    statuses: list[RunStatus],
    config: ReportConfig,
) -> None:
    mi = inputs.modalities[modality]
    ms = summary.modalities[modality]
    doc.add(Heading(f"{modality}: results", 2, f"results-{modality}"))
    _data_block(doc, modality, mi.dataset_summary, config)

    doc.add(Heading(f"{modality}: scores by method, protocol and label fraction", 3))
    if not ms.fractions:
        doc.add(Callout("not-run", f"no evaluation results in {modality}.eval_metrics."))
    for protocol in ms.missing_protocols:
        doc.add(
            Callout(
                "not-run",
                f"{config.protocol_label(protocol)} ({protocol}) was not run for {modality}.",
            )
        )
    if ms.fractions:
        table_m = summary.table[summary.table["modality"] == modality]
        metrics = ordered(table_m["metric"], config.metrics)
        for metric in metrics:
            doc.add(_score_table(summary, ms, metric, config))
        _differences_block(doc, ms, config)

    doc.add(Heading(f"{modality}: figures", 3))
    _figure(
        doc,
        figures,
        f"{modality}_label_efficiency",
        f"{modality}: test {config.primary_metric} vs labelled fraction (log x); one "
        "panel per protocol, error bars = std over seeds; dashed grey = raw-input baseline.",
        "label-efficiency figure",
    )
    _figure(
        doc,
        figures,
        f"{modality}_pretraining",
        f"{modality}: pretraining curves per method; dashed red lines = spec §9 collapse "
        f"thresholds (target std {config.collapse_target_std:g}, prediction std "
        f"{config.collapse_pred_std:g}).",
        "pretraining history",
    )
    _pretrain_table(doc, modality, statuses)
    _figure(
        doc,
        figures,
        f"{modality}_projection",
        f"{modality}: 2-D PCA of test-set features per method, colour = class.",
        f"feature projection ({modality}.feature_projection)",
    )
    shown = False
    for method in ms.methods:
        name = f"{modality}_confusion_{method}"
        if name in figures:
            shown = True
            _figure(
                doc,
                figures,
                name,
                f"{modality}: confusion matrix of {method} under its best protocol at "
                f"{fraction_label(ms.headline_fraction or config.headline_fraction)} labels "
                "(rows = true class, colour = share of the row, numbers = counts summed "
                "over seeds).",
                "",
            )
    if not shown:
        doc.add(
            Callout(
                "not-run",
                f"confusion matrix: no data2vec confusion in "
                f"{modality}.eval_details at the headline fraction.",
            )
        )
    _figure(
        doc,
        figures,
        f"{modality}_finetune_curves",
        f"{modality}: fine-tuning validation accuracy and training loss per epoch.",
        f"fine-tuning curves ({modality}.finetune_curves)",
    )


def _figure(doc: Document, figures: set[str], name: str, caption: str, what: str) -> None:
    if name in figures:
        doc.add(FigureRef(name, caption))
    elif what:
        doc.add(Callout("not-run", f"{what}: no data, figure not produced."))


def _data_block(
    doc: Document, modality: str, summary: Mapping[str, Any] | None, config: ReportConfig
) -> None:
    doc.add(Heading(f"{modality}: data", 3))
    name = f"{modality}.dataset_summary"
    if summary is None:
        doc.add(Callout("not-run", f"{name} is not available."))
        return
    # two-level blocks (e.g. class counts per split) read best as grids; the rest as key/value
    grids = {k: v for k, v in summary.items() if _is_grid(v)}
    flat = provenance.flatten({k: v for k, v in summary.items() if k not in grids})
    rows = [[k, _short_value(v)] for k, v in flat.items()]
    if rows:
        extra = len(rows) - config.max_summary_rows
        doc.add(table(["key", "value"], rows[: config.max_summary_rows], caption=name))
        if extra > 0:
            doc.add(Paragraph(f"… and {extra} more keys in {name}.", "muted"))
    for key, grid in grids.items():
        doc.add(_grid_table(f"{name}: {key}", grid, config.max_summary_rows))


def _is_grid(value: Any) -> bool:
    """A non-empty mapping of non-empty mappings of leaves (no third level)."""
    return (
        isinstance(value, Mapping)
        and bool(value)
        and all(
            isinstance(inner, Mapping)
            and bool(inner)
            and not any(isinstance(v, Mapping) for v in inner.values())
            for inner in value.values()
        )
    )


def _grid_table(caption: str, grid: Mapping[str, Mapping[str, Any]], max_rows: int) -> Table:
    outer = list(grid)
    inner = list(dict.fromkeys(k for v in grid.values() for k in v))
    # the longer list goes down the rows, so 35 classes x 3 splits stays narrow
    transpose = len(inner) > len(outer)
    row_keys, col_keys = (inner, outer) if transpose else (outer, inner)

    def value(r: str, c: str) -> Any:
        v = grid[c].get(r, "–") if transpose else grid[r].get(c, "–")
        return Cell(_short_value(v, 60), numeric=isinstance(v, int | float))

    rows = [[str(r), *(value(r, c) for c in col_keys)] for r in row_keys[:max_rows]]
    if len(row_keys) > max_rows:
        caption += f" (first {max_rows} of {len(row_keys)} rows)"
    return table(["", *map(str, col_keys)], rows, caption=caption)


def _short_value(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _score_table(
    summary: ReportSummary, ms: ModalitySummary, metric: str, config: ReportConfig
) -> Table:
    cells = summary.cells(ms.modality, metric)
    best = summary.best_cells(ms.modality, metric)
    d = config.decimals
    rows = []
    main = [p for p in ms.protocols if p not in config.context_protocols]
    context = [p for p in ms.protocols if p in config.context_protocols]
    # the usual seed count goes in the caption; cells with another count say so
    usual_n = int(cells["n_seeds"].mode().max()) if not cells.empty else 0
    for protocol in main + context:
        in_p = cells[cells["protocol"] == protocol]
        for method in ordered(in_p["method"], config.method_order):
            label = method + (" (context)" if protocol in context else "")
            row: list[Any] = [config.protocol_label(protocol), label]
            for fraction in ms.fractions:
                hit = in_p[(in_p["method"] == method) & np.isclose(in_p["fraction"], fraction)]
                if hit.empty:
                    row.append(Cell("–", numeric=True))
                    continue
                r = hit.iloc[0]
                is_best = (protocol, float(fraction), method) in best
                n = int(r["n_seeds"])
                text = mean_std(r["mean"], r["std"], n if n != usual_n else None, d)
                row.append(Cell(text, numeric=True, best=is_best))
            rows.append(row)
    return table(
        ["protocol", "method", *(fraction_label(f) for f in ms.fractions)],
        rows,
        caption=f"{ms.modality}: test {metric} (%), mean ± std over {usual_n} seeds unless "
        "marked (n = seeds); bold = best per protocol and fraction; raw-input rows are "
        "context, never marked",
    )


def _differences_block(doc: Document, ms: ModalitySummary, config: ReportConfig) -> None:
    comps = [c for c in ms.comparisons if c.metric == config.primary_metric]
    if not comps:
        doc.add(
            Callout(
                "not-run",
                f"no data2vec-vs-baseline comparison possible for "
                f"{ms.modality} (data2vec or its baselines missing).",
            )
        )
        return
    order = {p: i for i, p in enumerate(ordered(ms.protocols, config.protocol_order))}
    comps = sorted(comps, key=lambda c: (order.get(c.protocol, 99), c.fraction))
    doc.add(
        table(
            ["protocol", "labels", "comparison", "Δ (points)", "CI", "seeds", "verdict"],
            [_comparison_row(c, config, with_modality=False) for c in comps],
            caption=f"{ms.modality}: differences on {config.primary_metric} "
            f"({config.confidence * 100:g}% t-interval on per-seed paired differences; "
            "n/a with fewer than 2 pairs)",
        )
    )


def _pretrain_table(doc: Document, modality: str, statuses: list[RunStatus]) -> None:
    rows = [
        [
            s.method,
            Cell(_fmt(s.steps), numeric=True),
            Cell(_fmt(s.wall_time_s, 4), numeric=True),
            Cell(_fmt(s.final_target_std), numeric=True),
            Cell(_fmt(s.final_pred_std), numeric=True),
            Cell(
                "COLLAPSED" if s.collapsed else "no" if s.collapsed is False else "unknown",
                strong=bool(s.collapsed),
            ),
        ]
        for s in statuses
        if s.modality == modality
    ]
    if rows:
        doc.add(
            table(
                [
                    "method",
                    "steps",
                    "wall time (s)",
                    "final target std",
                    "final pred std",
                    "collapsed",
                ],
                rows,
                caption=f"{modality}: pretraining runs",
            )
        )


def _time_to_accuracy_section(doc: Document, inputs: ReportInputs, figures: set[str]) -> None:
    """The time-to-accuracy benchmark: best probe per method and data2vec2's time to v1's best."""
    doc.add(Heading("Time to accuracy (benchmark)", 2, "time-to-accuracy"))
    tta = inputs.time_to_accuracy
    if tta is None:
        doc.add(
            Callout(
                "not-run",
                "benchmarks/results/time_to_accuracy.json not found: run "
                "`python benchmarks/time_to_accuracy.py` to add this section.",
            )
        )
        return
    doc.add(
        Paragraph(
            "10%-label linear probe (final layer, test split) of each method's student encoder "
            "at points of its pretraining wall time; the same encoder and data per modality, "
            "random initialisation at t = 0. Measured by benchmarks/time_to_accuracy.py, not by "
            f"this run (finished {tta.get('finished', '?')}); {tta.get('note', '')}."
        )
    )
    rows = []
    for modality in ordered((r["modality"] for r in tta["runs"]), MODALITY_ORDER):
        s = (tta.get("summary") or {}).get(modality, {}).get("final/test_accuracy")
        if not s:
            continue
        runs = [r for r in tta["runs"] if r["modality"] == modality]
        times = [s.get(k) for k in ("v2_time_to_v1_best_s", "v2_over_v1_time", "v1_time_to_best_s")]
        to_best = (
            "not reached"
            if None in times
            else f"{times[0]:.0f} s = {times[1]:.2f} x v1's {times[2]:.0f} s"
        )
        budget = max(p["train_s"] for r in runs for p in r["points"])
        best = {m: s.get(f"best_{m}") for m in ("data2vec", "data2vec2", "masked_recon")}
        rows.append(
            [
                modality,
                Cell(f"{budget:.0f} s", numeric=True),
                *(Cell(points(v), numeric=True) for v in best.values()),
                Cell(points(s.get("random_init")), numeric=True),
                to_best,
            ]
        )
    doc.add(
        table(
            ["modality", "budget", "data2vec best", "data2vec2 best", "masked_recon best",
             "random init", "data2vec2 time to v1's best"],
            rows,
            caption="best probe test accuracy (%) within the budget",
        )
    )  # fmt: skip
    _figure(doc, figures, "time_to_accuracy", "probe accuracy vs pretraining wall time", "")


def _paper_section(doc: Document) -> None:
    doc.add(Heading("Context: what the paper reports (not measured here)", 2, "context"))
    doc.add(
        Callout(
            "note",
            "the numbers in this section are quoted from the papers (full-scale models, "
            "ImageNet/LibriSpeech/GLUE); they were not measured by this pipeline and are not "
            "comparable with the tiny-scale results above.",
        )
    )
    for t in paper.PAPER_TABLES:
        rows = [
            [Cell(r[0], strong=r[0] in t.highlight), *(Cell(v, numeric=True) for v in r[1:])]
            for r in t.rows
        ]
        doc.add(table(list(t.columns), rows, caption=f"{t.caption} {t.source}"))
    doc.add(BulletList(tuple(f"{text} {tag}" for text, tag in paper.PAPER_CLAIMS)))
    doc.add(
        Paragraph("Sources: " + " ".join(f"{tag} {ref}" for tag, ref in paper.SOURCES), "muted")
    )


def _provenance_section(
    doc: Document, inputs: ReportInputs, statuses: list[RunStatus], config: ReportConfig
) -> None:
    doc.add(Heading("Provenance", 2, "provenance"))

    doc.add(Heading("Code", 3))
    rows = [["report built at", inputs.git_commit or "unknown"]]
    rows += [
        [f"pretraining runs {runs}", commit] for commit, runs in provenance.run_commits(inputs)
    ]
    doc.add(table(["what", "git commit"], rows))

    doc.add(Heading("Parameters that differ from conf/base", 3))
    if inputs.parameters is None or inputs.base_parameters is None:
        doc.add(
            Callout(
                "not-run",
                "parameter comparison not available (run or base "
                "parameters were not passed to the report).",
            )
        )
    else:
        changes = provenance.params_diff(inputs.parameters, inputs.base_parameters)
        if changes:
            doc.add(
                table(
                    ["key", "this run", "conf/base"],
                    [[c.key, c.run_text, c.base_text] for c in changes],
                )
            )
        else:
            doc.add(Paragraph("none: this run used the conf/base parameters unchanged."))

    doc.add(Heading("Data", 3))
    doc.add(
        table(
            ["modality", "source", "dataset content hash", "data hash per pretraining run"],
            [list(r) for r in provenance.data_hash_rows(inputs)],
        )
    )

    doc.add(Heading("Environment", 3))
    env = provenance.environment_rows(inputs)
    if env:
        doc.add(
            table(
                ["key", "value"],
                [list(r) for r in env],
                caption="from the pretraining metadata (environment)",
            )
        )
    else:
        doc.add(Callout("not-run", "no environment recorded (no pretraining metadata)."))

    doc.add(Heading("Wall time per node", 3))
    if not inputs.node_timings:
        doc.add(
            Callout("not-run", "no node timings recorded (data/09_tracking/node_timings.json).")
        )
    else:
        timing_rows, total = provenance.timings_rows(inputs.node_timings)
        rows = [
            [n, Cell(f"{s:.1f}", numeric=True), Cell(f"{share * 100:.1f}%", numeric=True)]
            for n, s, share in timing_rows
        ]
        rows.append(
            [
                Cell("total", strong=True),
                Cell(f"{total:.1f}", True, True),
                Cell("100%", numeric=True),
            ]
        )
        doc.add(
            table(
                ["node", "seconds", "share"],
                rows,
                caption="last recorded wall time of each node, slowest first",
            )
        )

    doc.add(Heading("Collapse flags", 3))
    if statuses:
        doc.add(
            table(
                ["run", "collapsed", "collapse step", "final target std", "final pred std"],
                [
                    [
                        f"{s.modality}/{s.method}",
                        Cell(
                            "COLLAPSED"
                            if s.collapsed
                            else "no"
                            if s.collapsed is False
                            else "unknown",
                            strong=bool(s.collapsed),
                        ),
                        _fmt(s.collapse_step),
                        Cell(_fmt(s.final_target_std), numeric=True),
                        Cell(_fmt(s.final_pred_std), numeric=True),
                    ]
                    for s in statuses
                ],
            )
        )
        if not any(s.collapsed for s in statuses):
            doc.add(Paragraph("No pretraining run was flagged as collapsed."))
    else:
        doc.add(Callout("not-run", "no pretraining runs were passed to the report."))

    doc.add(Heading("Deviations from the paper", 3))
    items = [config.scale_note]
    items += [f"{text} ({', '.join(runs)})" for text, runs in provenance.deviations(inputs)]
    doc.add(BulletList(tuple(items)))
