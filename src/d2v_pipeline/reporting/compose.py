"""The report's content: the answer first ("does data2vec beat the baselines here, by how much,
and how sure are we?"), then the evidence per modality, the paper's numbers as context,
provenance, and an appendix with every comparison.

Order of the document: title (from the configuration that ran) -> run header (banner for a
non-base environment, env, date, command, commit, budget, wall time; what the intervals
cover; lanes not run) -> summary (one table at the headline fraction and one sentence per
modality) -> contents -> per-modality results -> time-to-accuracy benchmark -> paper
context -> provenance -> appendix (collapsed: every pairwise table and verdict sentence).

Sections are small functions appending blocks to a :class:`Document`. Everything the
report says about intervals lives in the "interval wording" functions below.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

import numpy as np

from d2v_pipeline.reporting import paper, provenance
from d2v_pipeline.reporting.as_run import (
    deviations_as_run,
    encoder_text,
    fractions_text,
    lane_budget,
    n_test_examples,
    steps_text,
    wall_time_text,
)
from d2v_pipeline.reporting.config import ReportConfig
from d2v_pipeline.reporting.document import (
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
    table,
)
from d2v_pipeline.reporting.inputs import MODALITY_ORDER, ReportInputs
from d2v_pipeline.reporting.provenance import RunStatus
from d2v_pipeline.reporting.stats import (
    INTERVALS_COVER_TEXT,
    Comparison,
    ModalitySummary,
    ReportSummary,
    fraction_label,
    ordered,
)

MODALITY_NOUNS = {"image": "images"}


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
    doc = Document(title=report_title(inputs, config))
    statuses = provenance.run_statuses(inputs, config.method_order)
    figures = set(figure_names)
    _run_header(doc, inputs, summary, statuses, config)
    _headline_section(doc, inputs, summary, statuses, config)
    doc.add(Contents())
    for modality in ordered(inputs.modalities, MODALITY_ORDER):
        _modality_section(doc, inputs, summary, modality, figures, statuses, config)
    _time_to_accuracy_section(doc, inputs, figures)
    _paper_section(doc)
    _provenance_section(doc, inputs, statuses, config)
    _appendix(doc, inputs, summary, config)
    return doc


# ---------------------------------------------------------------- formatting helpers


VERDICT_LABELS = {
    "win": "better",
    "loss": "worse",
    "tie": "no verdict",
    "n/a": "n/a (< 2 seeds)",
    "zero-width": "n/a (zero-width interval)",
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


def _baseline_name(c: Comparison, config: ReportConfig) -> str:
    if c.baseline_protocol == c.protocol:
        return c.baseline
    return f"{c.baseline} ({config.protocol_label(c.baseline_protocol)})"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def _name(text: str) -> Cell:
    return Cell(text, kind="name")


def _group(text: str, span: int) -> Cell:
    return Cell(text, kind="group", span=span)


# ---------------------------------------------------------------- interval wording
# The only place that words intervals: what they cover (one sentence near the top), their
# bounds, what they rest on, and when they support a verdict. Switching to richer
# intervals (test-set bootstrap, p/q-values) changes these functions only.


def interval_sources_sentence(summary: ReportSummary, config: ReportConfig) -> str:
    """Said once near the top: what the scores, ± and the intervals cover."""
    level = f"{config.confidence * 100:g}%"
    return (
        f"Scores are test-set {config.primary_metric} in percent, mean ± standard deviation "
        f"over evaluation seeds; every difference Δ carries a {level} interval. "
        + INTERVALS_COVER_TEXT
    )


def _ci_text(c: Comparison, config: ReportConfig) -> str:
    """The interval's bounds, '12.0 to 18.2', or 'n/a'."""
    iv = c.interval
    if not iv.available:
        return "n/a"
    return f"{points(iv.low, config.decimals)} to {points(iv.high, config.decimals)}"


def _interval_basis(c: Comparison) -> str:
    """What the interval rests on: '3 paired seeds + 630 test examples' (or why less)."""
    iv = c.interval
    seeds = (
        "seeds do not pair up: Welch"
        if iv.kind == "welch"
        else f"{iv.n} paired seed{'' if iv.n == 1 else 's'}"
    )
    if iv.covers_test and iv.n_test:
        seeds += f" + {iv.n_test:,} test examples"
    else:
        seeds += ", seeds only"
    if not math.isnan(c.q_value):
        seeds += f"; q = {c.q_value:.2g}"
    return seeds


def _verdict(c: Comparison) -> str:
    """``win``/``loss``/``tie``/``n/a`` (stats.Comparison.verdict: never a win or loss from a
    zero-width interval, and only after false-discovery-rate control), with ``zero-width``
    told apart from ``n/a`` for the wording."""
    iv = c.interval
    if iv.available and iv.zero_width:
        return "zero-width"
    return c.verdict


def _verdict_aside(c: Comparison) -> str:
    """What a difference that is not a win or loss amounts to, as a short aside."""
    verdict = _verdict(c)
    if verdict == "tie" and c.excludes_zero:
        return ", not significant after false-discovery-rate control"
    return {
        "tie": ", not distinguishable from 0",
        "n/a": ", too few seeds to judge",
        "zero-width": ", zero-width: no verdict",
    }.get(verdict, "")


def _delta_cell(c: Comparison | None, config: ReportConfig, missing: str) -> Cell:
    """'+15.1 (12.0 to 18.2)' in bold when the interval supports a verdict."""
    if c is None:
        return Cell("–", numeric=True, note=missing)
    text = f"{signed_points(c.interval.mean, config.decimals)} ({_ci_text(c, config)})"
    return Cell(text, numeric=True, strong=_verdict(c) in ("win", "loss"))


def verdict_sentence(c: Comparison, config: ReportConfig) -> str:
    """One comparison said plainly, whichever way it falls, e.g. "data2vec (47.0 ± 1.1)
    loses to scratch (50.0 ± 0.8) by 3.0 points (95% CI 1.2 to 4.8; 3 paired seeds),
    more than the spread over seeds (std up to 1.1)."."""
    d = config.decimals
    iv = c.interval
    a = f"{c.method} ({mean_std(c.method_mean, c.method_std, None, d)})"
    b = f"{_baseline_name(c, config)} ({mean_std(c.baseline_mean, c.baseline_std, None, d)})"
    level = f"{config.confidence * 100:g}% CI"
    basis = _interval_basis(c)
    verdict = _verdict(c)
    if verdict == "n/a":
        if math.isnan(iv.mean):
            return f"{a} vs {b}: no comparison possible."
        direction = "ahead of" if iv.mean >= 0 else "behind"
        return (
            f"{a} is {direction} {b} by {points(abs(iv.mean), d)} points, but with {basis} "
            f"there is no confidence interval ({level} n/a): too few seeds to judge."
        )
    ci = f"{level} {_ci_text(c, config)}; {basis}"
    if verdict == "zero-width":
        return (
            f"{a} vs {b}: {signed_points(iv.mean, d)} points with a zero-width interval "
            f"({ci}): {c.verdict_reason}; no verdict."
        )
    if verdict == "tie":
        diff = signed_points(iv.mean, d)
        return f"{a} vs {b}: {diff} points, no verdict: {c.verdict_reason} ({ci})."
    if verdict == "win":
        text = f"{a} beats {b} by {points(iv.mean, d)} points ({ci})"
    else:
        # the gap is stated as a positive number, so its interval is too: -(high)..-(low)
        gap_ci = f"{level} {points(-iv.high, d)} to {points(-iv.low, d)}; {basis}"
        text = f"{a} loses to {b} by {points(-iv.mean, d)} points ({gap_ci})"
    if not math.isnan(c.spread):
        relation = "more" if abs(iv.mean) > c.spread else "less"
        text += f", {relation} than the spread over seeds (std up to {points(c.spread, d)})"
    return text + "."


# ---------------------------------------------------------------- title and run header


def _env(inputs: ReportInputs) -> str | None:
    return (inputs.run_info or {}).get("env")


def report_title(inputs: ReportInputs, config: ReportConfig) -> str:
    """'data2vec vs baselines — images, speech, text — base experiment', from what ran."""
    lanes = [MODALITY_NOUNS.get(m, m) for m in ordered(inputs.modalities, MODALITY_ORDER)]
    parts = [config.title, ", ".join(lanes) or "no lane ran"]
    if inputs.missing_lanes:
        parts[-1] += f" ({', '.join(inputs.missing_lanes)} not run)"
    env = _env(inputs)
    if env == "base":
        parts.append("base experiment")
    elif env == "smoke":
        parts.append("SMOKE RUN (tiny sizes, not results)")
    elif env:
        parts.append(f"{env} environment")
    return " — ".join(parts)


def _env_flag(inputs: ReportInputs) -> str:
    env = _env(inputs)
    return f" --env {env}" if env and env != "base" else ""


def _banner(inputs: ReportInputs) -> Callout | None:
    env = _env(inputs)
    if env is None or env == "base":
        return None
    if env == "smoke":
        return Callout(
            "banner",
            "SMOKE RUN: conf/smoke shrinks every encoder, step count and dataset so that the "
            "whole graph runs in about a minute. It checks that the pipeline works; its "
            "numbers are not results. The experiment is `kedro run` (the base environment).",
        )
    return Callout(
        "banner",
        f"Environment {env!r}: conf/base overridden by conf/{env} (the changed parameters are "
        "listed under Provenance). Compare with the base experiment only with that in mind.",
    )


def _started(run_info: Mapping[str, Any]) -> str:
    text = run_info.get("started_at")
    if not text:
        return "not recorded"
    try:
        return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    except ValueError:
        return str(text)


def _git_text(run_info: Mapping[str, Any]) -> str:
    if "git_commit" not in run_info:
        return "not recorded"
    commit = run_info.get("git_commit")
    if commit is None:
        return "not a git checkout"
    if run_info.get("git_clean"):
        return f"{commit}, clean tree at the start of the run"
    if run_info.get("git_clean") is None:
        return f"{commit} (cleanliness not recorded)"
    changes = list(run_info.get("git_changes") or [])
    total = int(run_info.get("git_changes_total") or len(changes))
    listed = ", ".join(changes[:5]) + (f" and {total - 5} more" if total > 5 else "")
    return (
        f"{commit} with {total} uncommitted change{'s' if total != 1 else ''} at the start "
        f"of the run{': ' + listed if listed else ''}"
    )


def _run_header(
    doc: Document,
    inputs: ReportInputs,
    summary: ReportSummary,
    statuses: list[RunStatus],
    config: ReportConfig,
) -> None:
    if (banner := _banner(inputs)) is not None:
        doc.add(banner)
    if inputs.missing_lanes:
        lanes = ", ".join(inputs.missing_lanes)
        flag = _env_flag(inputs)
        doc.add(
            Callout(
                "not-run",
                f"lane{'s' if len(inputs.missing_lanes) > 1 else ''} {lanes}: no "
                f"{', '.join(f'{m}.eval_metrics' for m in inputs.missing_lanes)}, so this "
                f"report covers {', '.join(inputs.modalities) or 'no lane'} only. To add "
                f"{'them' if len(inputs.missing_lanes) > 1 else 'it'}: `kedro run{flag} "
                f"--namespaces {','.join(inputs.missing_lanes)}`, then `kedro run{flag} "
                "--pipelines report`.",
            )
        )
    info = inputs.run_info or {}
    missing = "not recorded (no run_info.json: a run from before it was recorded)"
    env = info.get("env")
    rows: list[list[Any]] = [
        [_name("environment"), env or missing],
        [_name("started"), _started(info) if info else missing],
        [_name("command"), info.get("command") or missing],
        [_name("code"), _git_text(info) if info else missing],
    ]
    for modality in ordered(inputs.modalities, MODALITY_ORDER):
        b = lane_budget(inputs.modalities[modality], config.method_order)
        rows.append(
            [
                _name(f"{modality} budget"),
                f"pretraining {steps_text(b)}; encoder {encoder_text(b.encoder)}",
            ]
        )
        seeds = ", ".join(map(str, b.seeds)) or "none"
        rows.append(
            [
                _name(f"{modality} evaluation"),
                f"seeds {seeds}; label fractions {fractions_text(b, config.protocol_label)}",
            ]
        )
    if inputs.node_timings:
        _, total = provenance.timings_rows(inputs.node_timings)
        rows.append(
            [
                _name("wall time"),
                f"{wall_time_text(total)} (sum of the last recorded time of "
                f"{len(inputs.node_timings)} nodes)",
            ]
        )
    else:
        rows.append([_name("wall time"), "not recorded (no node timings)"])
    doc.add(table(["run", "as recorded"], rows, caption="This run"))
    doc.add(Paragraph(interval_sources_sentence(summary, config), style="muted"))
    for text in _collapse_warnings(statuses, config):
        doc.add(Callout("warning", text))
    if not inputs.modalities:
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


# ---------------------------------------------------------------- the answer


def _find(
    ms: ModalitySummary,
    metric: str,
    fraction: float,
    protocol: str,
    method: str,
    baseline: str,
    baseline_protocol: str | None = None,
) -> Comparison | None:
    for c in ms.comparisons:
        if (
            c.metric == metric
            and c.protocol == protocol
            and c.method == method
            and c.baseline == baseline
            and math.isclose(c.fraction, fraction)
            and (baseline_protocol is None or c.baseline_protocol == baseline_protocol)
        ):
            return c
    return None


def _context_arm(summary: ReportSummary, modality: str, fraction: float) -> tuple | None:
    """(method, protocol, mean, std) of the raw-input baseline at ``fraction`` (or None)."""
    cfg = summary.config
    cells = summary.cells(modality, cfg.primary_metric)
    at = cells[
        cells["protocol"].isin(cfg.context_protocols) & np.isclose(cells["fraction"], fraction)
    ]
    if at.empty:
        return None
    r = at.iloc[0]
    return str(r["method"]), str(r["protocol"]), float(r["mean"]), float(r["std"])


def _headline_table(inputs: ReportInputs, summary: ReportSummary, config: ReportConfig) -> Table:
    """Per modality and protocol at the headline fraction: every method's score and its
    difference to the reference (scratch) and to the raw-input baseline, with intervals.
    A modality or protocol is written on the first row of its group only."""
    d, metric, ref = config.decimals, config.primary_metric, config.reference_method
    not_compared = "not compared: one of the two arms has no result at this fraction"
    rows, seeds = [], set()
    for modality in ordered(inputs.modalities, MODALITY_ORDER):
        ms = summary.modalities[modality]
        frac = ms.headline_fraction
        if frac is None:
            continue
        n_test = n_test_examples(inputs.modalities[modality])
        group = f"{modality} (n = {n_test:,})" if n_test else modality
        cells = summary.cells(modality, metric)
        at = cells[np.isclose(cells["fraction"], frac)]
        best = summary.best_cells(modality, metric)
        raw = _context_arm(summary, modality, frac)
        arms = [
            (p, m)
            for p in config.headline_protocols
            if p in ms.protocols
            for m in ordered(at.loc[at["protocol"] == p, "method"], config.method_order)
        ]
        for i, (protocol, method) in enumerate(arms):
            r = at[(at["protocol"] == protocol) & (at["method"] == method)].iloc[0]
            seeds.add(int(r["n_seeds"]))
            if method == ref:
                vs_ref = Cell("reference", numeric=True)
            else:
                found = _find(ms, metric, frac, protocol, method, ref)
                vs_ref = _delta_cell(found, config, not_compared)
            if raw:
                found = _find(ms, metric, frac, protocol, method, raw[0], raw[1])
                vs_raw = _delta_cell(found, config, not_compared)
            else:
                vs_raw = Cell("–", numeric=True, note=f"no raw-input baseline in {modality}")
            if i == 0 or arms[i - 1][0] != protocol:
                rows.append([_group(f"{group}: {config.protocol_label(protocol)}", 4)])
            score = mean_std(r["mean"], r["std"], None, d)
            is_best = (protocol, float(frac), method) in best
            rows.append([_name(method), Cell(score, numeric=True, best=is_best), vs_ref, vs_raw])
        if raw:
            rows.append([_group(f"{group}: {config.protocol_label(raw[1])} (context)", 4)])
            rows.append(
                [
                    _name(raw[0]),
                    Cell(mean_std(raw[2], raw[3], None, d), numeric=True),
                    Cell("–", numeric=True, note=f"context baseline: not compared with {ref}"),
                    Cell("reference", numeric=True),
                ]
            )
    level = f"{config.confidence * 100:g}%"
    n_seeds = "/".join(map(str, sorted(seeds))) or "0"
    return table(
        ["method", "score", f"Δ vs {ref}", "Δ vs raw input"],
        rows,
        caption=f"Test {metric} (%) at {fraction_label(config.headline_fraction)} labels",
        notes=[
            f"score = mean ± std over {n_seeds} seeds; Δ = method minus baseline in points "
            f"with its {level} interval; bold Δ: a win or loss (the interval excludes 0 and "
            "survives false-discovery-rate control); "
            "bold score: best of its protocol; n = test examples."
        ],
    )


def modality_sentence(ms: ModalitySummary, summary: ReportSummary, config: ReportConfig) -> str:
    """The answer for one modality in one sentence, e.g. "image (10% labels): data2vec2
    scores best, by fine-tuning (70.4 ± 2.7; +20.2 over scratch, 95% CI 15.0 to 25.4);
    against scratch, data2vec2 wins 3 of 3 protocols; data2vec wins 2 of 3 protocols; the
    raw-input probe (82.4 ± 0.9) beats every encoder (every comparison with it is a loss)"."""
    d, metric, ref = config.decimals, config.primary_metric, config.reference_method
    frac = ms.headline_fraction
    if frac is None:
        return f"{ms.modality}: no evaluation results."
    cells = summary.cells(ms.modality, metric)
    at = cells[
        np.isclose(cells["fraction"], frac) & cells["protocol"].isin(config.headline_protocols)
    ]
    head = f"{ms.modality} ({fraction_label(frac)} labels)"
    if at.empty:
        return f"{head}: no encoder was evaluated under {', '.join(config.headline_protocols)}."
    top = at.sort_values("mean", ascending=False, kind="stable").iloc[0]
    method, protocol = str(top["method"]), str(top["protocol"])
    text = (
        f"{head}: {method} scores best, by {config.protocol_label(protocol)} "
        f"({mean_std(top['mean'], top['std'], None, d)}"
    )
    c = _find(ms, metric, frac, protocol, method, ref)
    if c is not None:
        text += (
            f"; {signed_points(c.interval.mean, d)} over {ref}, "
            f"{config.confidence * 100:g}% CI {_ci_text(c, config)}{_verdict_aside(c)}"
        )
    text += ")"
    tallies = []
    for focus in [m for m in config.focus_methods if m in ms.methods and m != ref]:
        comps = [
            _find(ms, metric, frac, p, focus, ref)
            for p in config.headline_protocols
            if p in ms.protocols
        ]
        comps = [x for x in comps if x is not None]
        if comps:
            wins = sum(_verdict(x) == "win" for x in comps)
            losses = sum(_verdict(x) == "loss" for x in comps)
            lost = f", loses {losses}" if losses else ""
            tallies.append(f"{focus} wins {wins} of {len(comps)} protocols{lost}")
    if tallies:
        text += f"; against {ref}, " + "; ".join(tallies)
    raw = _context_arm(summary, ms.modality, frac)
    if raw is not None:
        text += "; " + _raw_clause(ms, raw, at, summary, config)
    return text + "."


def _raw_clause(ms: ModalitySummary, raw: tuple, at: Any, summary, config: ReportConfig) -> str:
    """How the raw-input baseline compares with the encoders at the headline fraction."""
    method, protocol, mean, std = raw
    metric, frac = config.primary_metric, ms.headline_fraction
    score = f"{config.protocol_label(protocol)} ({mean_std(mean, std, None, config.decimals)})"
    comps = [
        c
        for c in ms.comparisons
        if c.metric == metric
        and c.baseline == method
        and c.baseline_protocol == protocol
        and math.isclose(c.fraction, frac)
        and c.protocol in config.headline_protocols
    ]
    verdicts = {_verdict(c) for c in comps}
    top = float(at["mean"].max())
    if math.isclose(mean, top, abs_tol=1e-9):
        return f"the {score} equals the best encoder's mean"
    if mean > top:
        if comps and verdicts == {"loss"}:
            return f"the {score} beats every encoder (every comparison with it is a loss)"
        return f"the {score} scores above every encoder, though not every comparison is a loss"
    if comps and "win" in verdicts:
        return f"at least one encoder beats the {score} (a win after FDR control)"
    return f"the {score} is below the best encoder, but no comparison with it is a win"


def _headline_section(
    doc: Document,
    inputs: ReportInputs,
    summary: ReportSummary,
    statuses: list[RunStatus],
    config: ReportConfig,
) -> None:
    doc.add(Heading("Summary: does data2vec beat the baselines?", 2, "summary"))
    present = ordered(inputs.modalities, MODALITY_ORDER)
    if not any(summary.modalities[m].headline_fraction is not None for m in present):
        doc.add(Callout("not-run", "no evaluation results: nothing to summarise."))
        return
    doc.add(_headline_table(inputs, summary, config))
    collapsed = {(s.modality, s.method) for s in statuses if s.collapsed}
    for modality in present:
        ms = summary.modalities[modality]
        sentence = modality_sentence(ms, summary, config)
        flagged = sorted(m for mod, m in collapsed if mod == modality)
        if flagged:
            sentence += f" Caution: {', '.join(flagged)} collapsed in pretraining."
        doc.add(Paragraph(sentence, style="verdict"))
        if ms.headline_fraction is not None and not math.isclose(
            ms.headline_fraction, config.headline_fraction
        ):
            doc.add(
                Callout(
                    "note",
                    f"{modality}: no results at {fraction_label(config.headline_fraction)} "
                    f"labels; the closest evaluated fraction, "
                    f"{fraction_label(ms.headline_fraction)}, is used.",
                )
            )
    doc.add(
        Paragraph(
            "Every pairwise comparison, in words and at every label fraction, is in the appendix.",
            style="muted",
        )
    )


# ---------------------------------------------------------------- per modality


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
    doc.add(Paragraph(_data_line(modality, mi.dataset_summary), style="muted"))
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
        metrics = ordered(
            summary.table.loc[summary.table["modality"] == modality, "metric"], config.metrics
        )
        if config.primary_metric in metrics:
            doc.add(_score_table(inputs, summary, ms, config.primary_metric, config))
        others = [m for m in metrics if m != config.primary_metric]
        if others:
            doc.add(
                Details(
                    f"{modality}: {', '.join(others)} scores",
                    tuple(_score_table(inputs, summary, ms, m, config) for m in others),
                )
            )

    doc.add(Heading(f"{modality}: figures", 3))
    _figure(
        doc,
        figures,
        f"{modality}_label_efficiency",
        f"{modality}: test {config.primary_metric} vs labelled fraction (log x); one "
        "panel per protocol, error bars = std over seeds; grey = raw-input baseline.",
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
        f"{modality}_finetune_curves",
        f"{modality}: fine-tuning validation accuracy and training loss per epoch.",
        f"fine-tuning curves ({modality}.finetune_curves)",
    )
    confusions = [m for m in ms.methods if f"{modality}_confusion_{m}" in figures]
    for method in confusions:
        _figure(
            doc,
            figures,
            f"{modality}_confusion_{method}",
            f"{modality}: confusion matrix of {method} under its best protocol at "
            f"{fraction_label(ms.headline_fraction or config.headline_fraction)} labels "
            "(rows = true class, colour = share of the row, numbers = counts summed "
            "over seeds).",
            "",
            compact=True,
        )
    if not confusions:
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
        f"{modality}_projection",
        f"{modality}: 2-D PCA of test-set features per method, colour = class.",
        f"feature projection ({modality}.feature_projection)",
    )
    _data_details(doc, modality, mi.dataset_summary, config)


def _figure(
    doc: Document, figures: set[str], name: str, caption: str, what: str, compact: bool = False
) -> None:
    if name in figures:
        doc.add(FigureRef(name, caption, compact=compact))
    elif what:
        doc.add(Callout("not-run", f"{what}: no data, figure not produced."))


def _data_line(modality: str, summary: Mapping[str, Any] | None) -> str:
    if summary is None:
        return f"{modality}.dataset_summary is not available."
    counts = summary.get("counts") or {}
    splits = " / ".join(f"{counts[k]:,} {k}" for k in ("train", "val", "test") if k in counts)
    classes = summary.get("num_classes")
    source = summary.get("source")
    parts = [p for p in (splits and f"{splits} examples", classes and f"{classes} classes") if p]
    return (
        f"Data: {', '.join(parts) or 'sizes not recorded'}"
        + (f"; source {source}" if source else "")
        + "."
    )


def _data_details(
    doc: Document, modality: str, summary: Mapping[str, Any] | None, config: ReportConfig
) -> None:
    name = f"{modality}.dataset_summary"
    if summary is None:
        return
    blocks: list[Any] = []
    # two-level blocks (e.g. class counts per split) read best as grids; the rest as key/value
    grids = {k: v for k, v in summary.items() if _is_grid(v)}
    flat = provenance.flatten({k: v for k, v in summary.items() if k not in grids})
    rows = [
        [_name(k), Cell(_short_value(v), kind="code" if k.endswith("hash") else "")]
        for k, v in flat.items()
    ]
    if rows:
        extra = len(rows) - config.max_summary_rows
        blocks.append(table(["key", "value"], rows[: config.max_summary_rows], caption=name))
        if extra > 0:
            blocks.append(Paragraph(f"… and {extra} more keys in {name}.", "muted"))
    for key, grid in grids.items():
        blocks.append(_grid_table(f"{name}: {key}", grid, config.max_summary_rows))
    doc.add(Details(f"{modality}: data summary ({len(flat)} keys)", tuple(blocks)))


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

    rows = [[_name(str(r)), *(value(r, c) for c in col_keys)] for r in row_keys[:max_rows]]
    if len(row_keys) > max_rows:
        caption += f" (first {max_rows} of {len(row_keys)} rows)"
    return table(["", *map(str, col_keys)], rows, caption=caption)


def _short_value(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _missing_reason(
    inputs: ReportInputs, modality: str, protocol: str, fraction: float, config: ReportConfig
) -> str:
    """Why a score cell is empty, e.g. 'fine-tuned only at 10% labels
    (image.finetune.finetune_fractions)'."""
    metrics = inputs.modalities[modality].eval_metrics
    ran = sorted(
        float(f) for f in metrics.loc[metrics["protocol"] == protocol, "fraction"].unique()
    )
    if not ran:
        return f"{config.protocol_label(protocol)} was not run for {modality}"
    block = ((inputs.parameters or {}).get(modality) or {}).get("finetune") or {}
    key = "finetune_fractions" if protocol == "finetune" and "finetune_fractions" in block else ""
    where = f" ({modality}.finetune.{key})" if key else ""
    verb = "fine-tuned" if protocol == "finetune" else f"{config.protocol_label(protocol)} run"
    return f"{verb} only at {', '.join(fraction_label(f) for f in ran)} labels{where}"


def _score_table(
    inputs: ReportInputs,
    summary: ReportSummary,
    ms: ModalitySummary,
    metric: str,
    config: ReportConfig,
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
            row: list[Any] = [_name(config.protocol_label(protocol)), _name(label)]
            for fraction in ms.fractions:
                hit = in_p[(in_p["method"] == method) & np.isclose(in_p["fraction"], fraction)]
                if hit.empty:
                    reason = _missing_reason(inputs, ms.modality, protocol, fraction, config)
                    row.append(Cell("–", numeric=True, note=reason))
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
        caption=f"{ms.modality}: test {metric} (%) by label fraction",
        notes=[
            f"mean ± std over {usual_n} seeds unless marked (n = seeds); bold = best per "
            "protocol and fraction; raw-input rows are context, never marked."
        ],
    )


def _pretrain_table(doc: Document, modality: str, statuses: list[RunStatus]) -> None:
    rows = [
        [
            _name(s.method),
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
                caption=f"{modality}: pretraining runs (one per method: no spread)",
            )
        )


# ---------------------------------------------------------------- benchmark and paper


def _time_to_accuracy_section(doc: Document, inputs: ReportInputs, figures: set[str]) -> None:
    """The time-to-accuracy benchmark: each method's test probe at its best-validation
    checkpoint and data2vec2's time to v1's best (both chosen on validation)."""
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
                _name(modality),
                Cell(f"{budget:.0f} s", numeric=True),
                *(Cell(points(v), numeric=True) for v in best.values()),
                Cell(points(s.get("random_init")), numeric=True),
                to_best,
            ]
        )
    doc.add(
        table(
            [
                "modality",
                "budget",
                "data2vec",
                "data2vec2",
                "masked_recon",
                "random init",
                "data2vec2 time to v1's best (validation)",
            ],
            rows,
            caption="probe test accuracy (%) at each method's best-validation checkpoint",
            notes=["one benchmark run per method and one labelled subset: no spread."],
        )
    )
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


# ---------------------------------------------------------------- provenance


def _provenance_section(
    doc: Document, inputs: ReportInputs, statuses: list[RunStatus], config: ReportConfig
) -> None:
    doc.add(Heading("Provenance", 2, "provenance"))

    doc.add(Heading("Code", 3))
    info = inputs.run_info or {}
    rows = [[_name("report built at"), Cell(inputs.git_commit or "unknown", kind="code")]]
    if info:
        rows.append([_name("run started at"), Cell(_git_text(info), kind="code")])
    rows += [
        [_name(f"pretraining runs {runs}"), Cell(commit, kind="code")]
        for commit, runs in provenance.run_commits(inputs)
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
            diff = table(
                ["key", "this run", "conf/base"],
                [[_name(c.key), c.run_text, c.base_text] for c in changes],
            )
            # a few changes are read at a glance; a whole environment's overrides fold away
            few = len(changes) <= 12
            doc.add(diff if few else Details(f"{len(changes)} parameters differ", (diff,), 4))
        else:
            doc.add(Paragraph("none: this run used the conf/base parameters unchanged."))

    doc.add(Heading("Data", 3))
    doc.add(
        table(
            ["modality", "source", "dataset content hash", "data hash of each pretraining run"],
            [
                [_name(m), src, Cell(h, kind="code"), Cell(runs, kind="code")]
                for m, src, h, runs in provenance.data_hash_rows(inputs)
            ],
            notes=['"same": the run trained on the dataset with exactly this content hash.'],
        )
    )

    doc.add(Heading("Environment", 3))
    env = provenance.environment_rows(inputs)
    if env:
        doc.add(
            table(
                ["key", "value"],
                [[_name(k), v] for k, v in env],
                caption="from the pretraining metadata (environment)",
            )
        )
    else:
        doc.add(Callout("not-run", "no environment recorded (no pretraining metadata)."))

    doc.add(Heading("Wall time per node", 3))
    if not inputs.node_timings:
        doc.add(Callout("not-run", "no node timings recorded (09_tracking/node_timings.json)."))
    else:
        timing_rows, total = provenance.timings_rows(inputs.node_timings)
        rows = [
            [_name(n), Cell(f"{s:.1f}", numeric=True), Cell(f"{share * 100:.1f}%", numeric=True)]
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
            Details(
                f"{len(timing_rows)} nodes, {wall_time_text(total)} in total",
                (
                    table(
                        ["node", "seconds", "share"],
                        rows,
                        caption="last recorded wall time of each node, slowest first",
                    ),
                ),
                level=4,
            )
        )

    doc.add(Heading("Collapse flags", 3))
    if statuses:
        doc.add(
            table(
                ["run", "collapsed", "collapse step", "final target std", "final pred std"],
                [
                    [
                        _name(f"{s.modality}/{s.method}"),
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

    doc.add(Heading("Deviations from the paper (as run)", 3))
    doc.add(BulletList((config.scale_note, *deviations_as_run(inputs, config.method_order))))


# ---------------------------------------------------------------- appendix


def _comparison_row(c: Comparison, config: ReportConfig) -> list[Any]:
    verdict = _verdict(c)
    return [
        _name(config.protocol_label(c.protocol)),
        fraction_label(c.fraction),
        _name(f"{c.method} − {_baseline_name(c, config)}"),
        Cell(signed_points(c.interval.mean, config.decimals), numeric=True),
        Cell(_ci_text(c, config), numeric=True),
        Cell(_interval_basis(c)),
        Cell(VERDICT_LABELS[verdict], strong=verdict in ("win", "loss"), note=c.verdict_reason),
    ]


def _appendix(
    doc: Document, inputs: ReportInputs, summary: ReportSummary, config: ReportConfig
) -> None:
    doc.add(Heading("Appendix: every comparison", 2, "appendix"))
    doc.add(
        Paragraph(
            f"Each data2vec method ({', '.join(config.focus_methods)}) against every method "
            f"listed after it, every other method against {config.reference_method}, and "
            "every method against the raw-input baseline, per protocol and label fraction. "
            "A method wins or loses only when the interval of its difference has positive "
            "width, excludes zero, and the difference survives Benjamini-Hochberg "
            "false-discovery-rate control over all comparisons of its modality and metric.",
            style="muted",
        )
    )
    for modality in ordered(inputs.modalities, MODALITY_ORDER):
        ms = summary.modalities[modality]
        comps = [c for c in ms.comparisons if c.metric == config.primary_metric]
        if not comps:
            doc.add(
                Callout(
                    "not-run",
                    f"no data2vec-vs-baseline comparison possible for {modality} "
                    "(data2vec or its baselines missing).",
                )
            )
            continue
        frac = ms.headline_fraction
        doc.add(Paragraph(f"{modality}: {ms.chance(config.primary_metric).sentence()}"))
        at = [c for c in comps if frac is not None and math.isclose(c.fraction, frac)]
        order = {p: i for i, p in enumerate(ordered(ms.protocols, config.protocol_order))}
        at.sort(key=lambda c: order.get(c.protocol, 99))
        tally = dict.fromkeys(VERDICT_LABELS, 0)
        for c in at:
            tally[_verdict(c)] += 1
        words = {
            "win": "better",
            "loss": "worse",
            "tie": "without a verdict",
            "n/a": "without enough seeds",
            "zero-width": "with a zero-width interval",
        }
        counts = ", ".join(f"{n} {words[k]}" for k, n in tally.items() if n)
        sentences = [
            f"{config.protocol_label(c.protocol)}: {verdict_sentence(c, config)}" for c in at
        ]
        if at:
            doc.add(
                Details(
                    f"{modality}: the {len(at)} comparisons at {fraction_label(frac)} labels "
                    f"in words ({counts})",
                    (BulletList(tuple(sentences)),),
                )
            )
        comps.sort(key=lambda c: (order.get(c.protocol, 99), c.fraction))
        doc.add(
            Details(
                f"{modality}: all {len(comps)} differences at every label fraction (table)",
                (
                    table(
                        [
                            "protocol",
                            "labels",
                            "comparison",
                            "Δ (points)",
                            "CI",
                            "interval rests on",
                            "verdict",
                        ],
                        [_comparison_row(c, config) for c in comps],
                        caption=f"{modality}: differences on {config.primary_metric} "
                        f"({config.confidence * 100:g}% interval; q = Benjamini-Hochberg "
                        "adjusted p-value over the modality's comparisons)",
                    ),
                ),
            )
        )
