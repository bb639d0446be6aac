"""Statistics of the report: means and spreads over seeds, best cells, paired differences
with t-intervals, the headline verdicts, and the DVC-friendly metrics/label-efficiency tables.

All accuracies stay in 0..1 here; the renderers turn them into points (x100).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from d2v_pipeline.reporting.config import ReportConfig
from d2v_pipeline.reporting.inputs import ReportInputs

SUMMARY_COLUMNS = (
    "modality",
    "protocol",
    "method",
    "fraction",
    "metric",
    "mean",
    "std",
    "n_seeds",
)
LABEL_EFFICIENCY_COLUMNS = (
    "modality",
    "protocol",
    "method",
    "fraction",
    "accuracy_mean",
    "accuracy_std",
    "n_seeds",
)


def ordered(names: Iterable[str], preferred: Sequence[str]) -> list[str]:
    """Unique ``names`` with the ``preferred`` ones first (in that order), the rest sorted."""
    unique = set(names)
    head = [n for n in preferred if n in unique]
    return head + sorted(unique - set(head))


def fraction_label(fraction: float) -> str:
    """0.1 -> '10%', 0.01 -> '1%', 0.125 -> '12.5%'."""
    return f"{fraction * 100:.6g}%"


def fraction_key(fraction: float) -> str:
    """The metrics.json key of a label fraction: 0.1 -> 'frac_0.1'."""
    return f"frac_{fraction:g}"


def summarise_metrics(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof 1; NaN with one seed) and seed count per
    modality x protocol x method x fraction x metric."""
    if metrics.empty:
        return pd.DataFrame({c: [] for c in SUMMARY_COLUMNS})
    keys = ["modality", "protocol", "method", "fraction", "metric"]
    grouped = metrics.groupby(keys, sort=True)["value"]
    out = grouped.agg(mean="mean", std=lambda v: v.std(ddof=1), n_seeds="count").reset_index()
    out["n_seeds"] = out["n_seeds"].astype(int)
    return out[list(SUMMARY_COLUMNS)]


@dataclass(frozen=True)
class Interval:
    """Mean difference ``a - b`` and its two-sided t-interval; ``n`` pairs (or seeds).

    ``kind`` is ``paired`` (seeds match: t-interval on the per-seed differences), ``welch``
    (seeds do not pair up: Welch's unequal-variance interval) or ``n/a`` (too few values:
    ``low``/``high`` are NaN).
    """

    mean: float
    low: float
    high: float
    n: int
    kind: str

    @property
    def available(self) -> bool:
        return self.kind != "n/a"


def paired_difference(
    a: Mapping[int, float], b: Mapping[int, float], confidence: float = 0.95
) -> Interval:
    """Difference ``a - b`` of two per-seed results with a ``confidence`` t-interval.

    Seeds present in both are paired (the same labelled subset, so their noise cancels):
    with n >= 2 pairs, mean(d) +- t_{(1+c)/2, n-1} * sd(d) / sqrt(n). Without two pairs but
    with >= 2 seeds on each side, Welch's interval; otherwise the CI is "n/a".
    """
    if not a or not b:
        return Interval(math.nan, math.nan, math.nan, 0, "n/a")
    q = (1 + confidence) / 2
    common = sorted(set(a) & set(b))
    if len(common) >= 2:
        d = np.array([a[s] - b[s] for s in common], dtype=float)
        n = d.size
        half = stats.t.ppf(q, n - 1) * d.std(ddof=1) / math.sqrt(n)
        return Interval(
            float(d.mean()), float(d.mean() - half), float(d.mean() + half), n, "paired"
        )
    va, vb = np.array(list(a.values()), float), np.array(list(b.values()), float)
    diff = float(va.mean() - vb.mean())
    if va.size >= 2 and vb.size >= 2:
        sa, sb = va.var(ddof=1) / va.size, vb.var(ddof=1) / vb.size
        se = math.sqrt(sa + sb)
        if se == 0:
            return Interval(diff, diff, diff, min(va.size, vb.size), "welch")
        dof = (sa + sb) ** 2 / (sa**2 / (va.size - 1) + sb**2 / (vb.size - 1))
        half = stats.t.ppf(q, dof) * se
        return Interval(diff, diff - half, diff + half, min(va.size, vb.size), "welch")
    return Interval(diff, math.nan, math.nan, len(common), "n/a")


@dataclass(frozen=True)
class Comparison:
    """``method`` (under ``protocol``) minus ``baseline`` (under ``baseline_protocol``)."""

    modality: str
    metric: str
    fraction: float
    protocol: str
    method: str
    baseline: str
    baseline_protocol: str
    interval: Interval
    method_mean: float
    method_std: float
    baseline_mean: float
    baseline_std: float

    @property
    def spread(self) -> float:
        """The larger seed std of the two arms (NaN when neither has two seeds)."""
        values = [s for s in (self.method_std, self.baseline_std) if not math.isnan(s)]
        return max(values) if values else math.nan

    @property
    def verdict(self) -> str:
        """``win`` / ``loss`` (the CI excludes 0), ``tie`` (it spans 0), ``n/a`` (no CI)."""
        iv = self.interval
        if not iv.available:
            return "n/a"
        if iv.low > 0:
            return "win"
        if iv.high < 0:
            return "loss"
        return "tie"


@dataclass
class ModalitySummary:
    """Per-modality results the document and figures need."""

    modality: str
    methods: list[str]
    protocols: list[str]
    fractions: list[float]
    missing_protocols: list[str]
    headline_fraction: float | None
    comparisons: list[Comparison] = field(default_factory=list)


@dataclass
class ReportSummary:
    """Everything computed from the metrics; figures and the document read this."""

    table: pd.DataFrame
    modalities: dict[str, ModalitySummary]
    config: ReportConfig

    def cells(self, modality: str, metric: str) -> pd.DataFrame:
        t = self.table
        return t[(t["modality"] == modality) & (t["metric"] == metric)]

    def best_cells(self, modality: str, metric: str) -> set[tuple[str, float, str]]:
        """(protocol, fraction, method) of the best mean per protocol x fraction, ties
        included; context protocols (raw-input baselines) are never best."""
        return best_cells(self.cells(modality, metric), self.config.context_protocols)


def best_cells(
    cells: pd.DataFrame, context_protocols: Sequence[str] = ()
) -> set[tuple[str, float, str]]:
    """Best mean per (protocol, fraction) among ``cells`` (a summary table slice)."""
    best: set[tuple[str, float, str]] = set()
    cells = cells[~cells["protocol"].isin(context_protocols)]
    for (protocol, fraction), group in cells.groupby(["protocol", "fraction"]):
        top = group["mean"].max()
        for method in group.loc[np.isclose(group["mean"], top, rtol=0, atol=1e-12), "method"]:
            best.add((str(protocol), float(fraction), str(method)))
    return best


def _per_seed(metrics: pd.DataFrame, method: str, protocol: str, fraction: float, metric: str):
    rows = metrics[
        (metrics["method"] == method)
        & (metrics["protocol"] == protocol)
        & np.isclose(metrics["fraction"], fraction)
        & (metrics["metric"] == metric)
    ]
    return {int(s): float(v) for s, v in zip(rows["seed"], rows["value"], strict=True)}


def compare_methods(metrics: pd.DataFrame, modality: str, config: ReportConfig) -> list[Comparison]:
    """Each focus method (data2vec family) minus every method shown after it, per protocol,
    fraction and metric; plus minus each context baseline (raw-input probe) at the same
    fraction."""
    comparisons: list[Comparison] = []
    if metrics.empty:
        return comparisons
    methods = ordered(metrics["method"], config.method_order)
    context = metrics[metrics["protocol"].isin(config.context_protocols)]
    main = metrics[~metrics["protocol"].isin(config.context_protocols)]
    for metric in ordered(metrics["metric"], config.metrics):
        for protocol in ordered(main["protocol"], config.protocol_order):
            in_protocol = main[(main["protocol"] == protocol) & (main["metric"] == metric)]
            for fraction in sorted(in_protocol["fraction"].unique()):
                present = set(
                    in_protocol.loc[np.isclose(in_protocol["fraction"], fraction), "method"]
                )
                for i, method in enumerate(methods):
                    if method not in config.focus_methods or method not in present:
                        continue
                    a = _per_seed(main, method, protocol, fraction, metric)
                    targets = [(b, protocol) for b in methods[i + 1 :] if b in present]
                    ctx = context[np.isclose(context["fraction"], fraction)]
                    ctx = ctx[ctx["metric"] == metric]
                    targets += [
                        (b, p)
                        for p in ordered(ctx["protocol"], config.protocol_order)
                        for b in ordered(ctx.loc[ctx["protocol"] == p, "method"], methods)
                        if b != method
                    ]
                    for baseline, b_protocol in targets:
                        b = _per_seed(metrics, baseline, b_protocol, fraction, metric)
                        comparisons.append(
                            Comparison(
                                modality=modality,
                                metric=metric,
                                fraction=float(fraction),
                                protocol=protocol,
                                method=method,
                                baseline=baseline,
                                baseline_protocol=b_protocol,
                                interval=paired_difference(a, b, config.confidence),
                                method_mean=_mean(a),
                                method_std=_std(a),
                                baseline_mean=_mean(b),
                                baseline_std=_std(b),
                            )
                        )
    return comparisons


def _mean(values: Mapping[int, float]) -> float:
    return float(np.mean(list(values.values()))) if values else math.nan


def _std(values: Mapping[int, float]) -> float:
    return float(np.std(list(values.values()), ddof=1)) if len(values) >= 2 else math.nan


def closest_fraction(fractions: Sequence[float], target: float) -> float | None:
    """The present fraction closest to ``target`` on a log scale (None when none)."""
    if not fractions:
        return None
    return min(fractions, key=lambda f: (abs(math.log(f) - math.log(target)), -f))


def summarise_report(inputs: ReportInputs, config: ReportConfig) -> ReportSummary:
    """Summary table over seeds and the comparisons of every modality."""
    frames = [m.eval_metrics for m in inputs.modalities.values() if not m.eval_metrics.empty]
    all_metrics = pd.concat(frames, ignore_index=True) if frames else None
    table = (
        summarise_metrics(all_metrics)
        if all_metrics is not None
        else summarise_metrics(pd.DataFrame())
    )
    modalities: dict[str, ModalitySummary] = {}
    for name in ordered(inputs.modalities, ("image", "speech", "text")):
        metrics = inputs.modalities[name].eval_metrics
        fractions = sorted(float(f) for f in metrics["fraction"].unique())
        protocols = ordered(metrics["protocol"], config.protocol_order)
        modalities[name] = ModalitySummary(
            modality=name,
            methods=ordered(metrics["method"], config.method_order),
            protocols=protocols,
            fractions=fractions,
            missing_protocols=[p for p in config.expected_protocols if p not in protocols],
            headline_fraction=closest_fraction(fractions, config.headline_fraction),
            comparisons=compare_methods(metrics, name, config),
        )
    return ReportSummary(table=table, modalities=modalities, config=config)


def label_efficiency_table(summary: ReportSummary) -> pd.DataFrame:
    """Primary-metric mean/std/n per modality x protocol x method x fraction (for DVC plots)."""
    t = summary.table[summary.table["metric"] == summary.config.primary_metric]
    out = pd.DataFrame(
        {
            "modality": t["modality"].astype(str),
            "protocol": t["protocol"].astype(str),
            "method": t["method"].astype(str),
            "fraction": t["fraction"].astype(float),
            "accuracy_mean": t["mean"].astype(float).round(6),
            "accuracy_std": t["std"].astype(float).round(6),
            "n_seeds": t["n_seeds"].astype(int),
        }
    )
    return out.sort_values(["modality", "protocol", "method", "fraction"]).reset_index(drop=True)


def _num(value: Any, digits: int = 6) -> float | None:
    """A JSON-safe rounded float (NaN/inf -> None: strict JSON has no NaN)."""
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return round(f, digits) if math.isfinite(f) else None


def metrics_dict(summary: ReportSummary, inputs: ReportInputs | None = None) -> dict[str, Any]:
    """The compact nested dict for metrics.json (``dvc metrics show``).

    ``{m: {protocol: {method: {"frac_0.1": {"<metric>_mean", "<metric>_std", "n_seeds"}}},
    "deltas": {"<method>_minus_<baseline>": {protocol: {"frac_0.1": {"<metric>_mean",
    "ci_low", "ci_high", "n"}}}}, "pretrain": {method: {...}}}}``; deltas are on the
    primary metric, and ``n`` is the number of paired seeds.
    """
    out: dict[str, Any] = {}
    primary = summary.config.primary_metric
    for row in summary.table.itertuples(index=False):
        cell = (
            out.setdefault(row.modality, {})
            .setdefault(row.protocol, {})
            .setdefault(row.method, {})
            .setdefault(fraction_key(row.fraction), {})
        )
        cell[f"{row.metric}_mean"] = _num(row.mean)
        cell[f"{row.metric}_std"] = _num(row.std)
        cell["n_seeds"] = max(int(row.n_seeds), cell.get("n_seeds", 0))
    for name, ms in summary.modalities.items():
        for c in ms.comparisons:
            if c.metric != primary:
                continue
            key = f"{c.method}_minus_{c.baseline}"
            deltas = out.setdefault(name, {}).setdefault("deltas", {}).setdefault(key, {})
            deltas.setdefault(c.protocol, {})[fraction_key(c.fraction)] = {
                f"{primary}_mean": _num(c.interval.mean),
                "ci_low": _num(c.interval.low),
                "ci_high": _num(c.interval.high),
                "n": c.interval.n,
            }
    if inputs is not None:
        for name, mi in inputs.modalities.items():
            for method, run in mi.runs.items():
                if run.meta is None:
                    continue
                meta = run.meta
                out.setdefault(name, {}).setdefault("pretrain", {})[method] = {
                    "collapsed": bool(meta.get("collapsed", False)),
                    "final_loss": _num(meta.get("final_loss")),
                    "final_target_std": _num(meta.get("final_target_std")),
                    "final_pred_std": _num(meta.get("final_pred_std")),
                    "wall_time_s": _num(meta.get("wall_time_s"), 2),
                }
    return out
