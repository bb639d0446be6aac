"""The report's figures (matplotlib, object-oriented API: no pyplot state, no display).

Each builder returns a :class:`matplotlib.figure.Figure`, or ``None`` when its input is
absent or empty (the document then says "not run"). Names are stable so report.md can
link ``figures/<name>.png``: ``<m>_label_efficiency``, ``<m>_pretraining``,
``<m>_projection``, ``<m>_confusion_<method>``, ``<m>_finetune_curves``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from d2v_pipeline.reporting.config import ReportConfig
from d2v_pipeline.reporting.inputs import ReportInputs
from d2v_pipeline.reporting.stats import ReportSummary, fraction_label, ordered

# pretraining history panels: (column, title, log scale); spec §9: log what collapse shows
HISTORY_PANELS = (
    ("loss", "loss (each method its own objective)", False),
    ("target_std", "target std", True),
    ("pred_std", "prediction std", True),
    ("tau", "EMA decay τ", False),
    ("lr", "learning rate", False),
    ("samples_per_s", "samples / s", False),
)


def method_colours(methods: Sequence[str], order: Sequence[str]) -> dict[str, Any]:
    """A stable colour per method: the preferred order gets the first tab10 colours."""
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    names = ordered([*order, *methods], order)
    return {m: palette[i % len(palette)] for i, m in enumerate(names)}


@dataclass(frozen=True)
class ConfusionChoice:
    """Which confusion matrix the report shows for a method: its best protocol at the
    headline fraction (highest mean primary metric among protocols with a matrix)."""

    method: str
    protocol: str
    fraction: float
    fraction_key: str


def _fraction_key(by_fraction: Mapping[str, Any], fraction: float) -> str | None:
    for key in by_fraction:
        if math.isclose(float(key), fraction, rel_tol=0, abs_tol=1e-9):
            return key
    return None


def choose_confusion(
    summary: ReportSummary, inputs: ReportInputs, modality: str, method: str
) -> ConfusionChoice | None:
    """The best-scoring protocol of ``method`` at the headline fraction that has a matrix."""
    ms = summary.modalities.get(modality)
    details = inputs.modalities[modality].eval_details if modality in inputs.modalities else None
    if ms is None or ms.headline_fraction is None or not details:
        return None
    by_protocol = details.get("confusion", {}).get(method, {})
    cells = summary.cells(modality, summary.config.primary_metric)
    cells = cells[(cells["method"] == method) & np.isclose(cells["fraction"], ms.headline_fraction)]
    for row in cells.sort_values("mean", ascending=False).itertuples(index=False):
        key = _fraction_key(by_protocol.get(row.protocol, {}), ms.headline_fraction)
        if key is not None:
            return ConfusionChoice(method, str(row.protocol), ms.headline_fraction, key)
    return None


def label_efficiency_figure(
    summary: ReportSummary, modality: str, colours: Mapping[str, Any]
) -> Figure | None:
    """Primary metric vs label fraction (log x), one panel per protocol, one line per
    method, error bars = std over seeds; raw-input baselines as dashed context lines."""
    cfg = summary.config
    cells = summary.cells(modality, cfg.primary_metric)
    if cells.empty:
        return None
    main = cells[~cells["protocol"].isin(cfg.context_protocols)]
    context = cells[cells["protocol"].isin(cfg.context_protocols)]
    protocols = ordered(main["protocol"], cfg.protocol_order) or ordered(
        context["protocol"], cfg.protocol_order
    )
    fractions = sorted(cells["fraction"].unique())
    fig = Figure(figsize=(4.3 * len(protocols), 3.6), layout="constrained")
    axes = fig.subplots(1, len(protocols), squeeze=False, sharey=True)[0]
    for ax, protocol in zip(axes, protocols, strict=True):
        panel = main[main["protocol"] == protocol]
        for method in ordered(panel["method"], cfg.method_order):
            rows = panel[panel["method"] == method].sort_values("fraction")
            ax.errorbar(
                rows["fraction"],
                rows["mean"] * 100,
                yerr=rows["std"].fillna(0) * 100,
                marker="o",
                capsize=3,
                label=method,
                color=colours.get(method),
            )
        for (method, ctx_protocol), rows in context.groupby(["method", "protocol"]):
            if ctx_protocol == protocol:
                continue
            rows = rows.sort_values("fraction")
            ax.errorbar(
                rows["fraction"],
                rows["mean"] * 100,
                yerr=rows["std"].fillna(0) * 100,
                marker="s",
                linestyle="--",
                capsize=3,
                color="0.45",
                label=f"{method} ({cfg.protocol_label(str(ctx_protocol))})",
            )
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(fractions))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([fraction_label(f) for f in fractions])
        ax.set_title(cfg.protocol_label(protocol))
        ax.set_xlabel("labelled fraction of the train split")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel(f"test {cfg.primary_metric} (%)")
    fig.suptitle(f"{modality}: label efficiency (mean ± std over seeds)")
    return fig


def pretraining_figure(
    inputs: ReportInputs, modality: str, config: ReportConfig, colours: Mapping[str, Any]
) -> Figure | None:
    """Loss, target std, prediction std, τ, lr (and throughput) vs step, one line per
    method; spec §9 collapse thresholds drawn on the std panels."""
    runs = inputs.modalities[modality].runs if modality in inputs.modalities else {}
    histories = {
        m: r.history for m, r in runs.items() if r.history is not None and not r.history.empty
    }
    if not histories:
        return None
    panels = [
        p
        for p in HISTORY_PANELS
        if any(p[0] in h.columns and h[p[0]].notna().any() for h in histories.values())
    ]
    ncols = 3
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    thresholds = {"target_std": config.collapse_target_std, "pred_std": config.collapse_pred_std}
    for ax, (column, title, log) in zip(axes, panels, strict=False):
        for method in ordered(histories, config.method_order):
            h = histories[method]
            if column not in h.columns or not h[column].notna().any():
                continue
            y = h[column]
            if log:
                y = y.where(y > 0)  # a log axis cannot show 0; the gap is visible
            ax.plot(h["step"], y, label=method, color=colours.get(method), lw=1.3)
            meta = runs[method].meta or {}
            if meta.get("collapsed") and meta.get("collapse_step") is not None:
                ax.axvline(
                    meta["collapse_step"],
                    color=colours.get(method),
                    ls=":",
                    lw=1,
                    label=f"{method} collapsed",
                )
        if column in thresholds:
            ax.axhline(
                thresholds[column], color="crimson", ls="--", lw=1, label="collapse threshold §9"
            )
        if log:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(f"{modality}: pretraining")
    return fig


def _label_names(labels: pd.Series, class_names: Sequence[str] | None) -> pd.Series:
    numeric = pd.to_numeric(labels, errors="coerce")
    if class_names and numeric.notna().all() and (numeric % 1 == 0).all():
        idx = numeric.astype(int)
        if idx.between(0, len(class_names) - 1).all():
            return idx.map(lambda i: str(class_names[i]))
    return labels.astype(str)


def projection_figure(inputs: ReportInputs, modality: str, config: ReportConfig) -> Figure | None:
    """2-D PCA of test features, one panel per method, colour = class."""
    mi = inputs.modalities.get(modality)
    df = mi.feature_projection if mi else None
    if df is None or df.empty:
        return None
    class_names = (mi.eval_details or {}).get("class_names")
    df = df.assign(_label=_label_names(df["label"], class_names))
    methods = ordered(df["method"], config.method_order)
    # classes in the dataset's order when names are known, else sorted
    rank = {str(name): i for i, name in enumerate(class_names or [])}
    labels = sorted(df["_label"].unique(), key=lambda s: (rank.get(s, len(rank)), s))
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    colour = {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}
    fig = Figure(figsize=(3.6 * len(methods) + 1.6, 3.6), layout="constrained")
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    rng = np.random.default_rng(0)  # fixed subsample: the same figure every run
    for ax, method in zip(axes, methods, strict=True):
        rows = df[df["method"] == method]
        if len(rows) > config.max_projection_points:
            rows = rows.iloc[np.sort(rng.choice(len(rows), config.max_projection_points, False))]
        ax.scatter(
            rows["component_1"],
            rows["component_2"],
            c=[colour[v] for v in rows["_label"]],
            s=7,
            alpha=0.75,
            linewidths=0,
        )
        ax.set_title(method)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.set_xticks([])
        ax.set_yticks([])
    if len(labels) <= 20:
        handles = [axes[-1].scatter([], [], color=colour[lab], s=20, label=lab) for lab in labels]
        fig.legend(handles=handles, loc="outside right center", fontsize=7, title="class")
    fig.suptitle(f"{modality}: test features, 2-D PCA (colour = class)")
    return fig


def confusion_figure(
    matrix: Sequence[Sequence[int]],
    class_names: Sequence[str] | None,
    title: str,
    annotate_max: int = 12,
) -> Figure:
    """Row-normalised confusion heatmap (rows = true class), counts written in small grids."""
    counts = np.asarray(matrix, dtype=float)
    n = counts.shape[0]
    names = [str(c) for c in class_names] if class_names else [str(i) for i in range(n)]
    names = [s if len(s) <= 14 else s[:13] + "…" for s in names]
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    side = min(max(3.2, 0.42 * n + 1.8), 12)
    fig = Figure(figsize=(side + 1, side), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="share of the true class", shrink=0.8)
    ticks = np.arange(n)
    ax.set_xticks(ticks, names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(ticks, names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= annotate_max:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    f"{int(counts[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if share[i, j] > 0.55 else "black",
                )
    ax.set_title(title, fontsize=9)
    return fig


def finetune_curves_figure(
    inputs: ReportInputs, modality: str, config: ReportConfig, colours: Mapping[str, Any]
) -> Figure | None:
    """Validation accuracy (and training loss) vs epoch, one panel per label fraction,
    mean over seeds with a ± std band."""
    mi = inputs.modalities.get(modality)
    df = mi.finetune_curves if mi else None
    if df is None or df.empty:
        return None
    rows_spec = [("val_accuracy", "validation accuracy (%)", 100.0)]
    if "train_loss" in df.columns and df["train_loss"].notna().any():
        rows_spec.append(("train_loss", "training loss", 1.0))
    fractions = sorted(df["fraction"].unique())
    fig = Figure(figsize=(4.0 * len(fractions), 3.0 * len(rows_spec)), layout="constrained")
    axes = fig.subplots(len(rows_spec), len(fractions), squeeze=False)
    for c, fraction in enumerate(fractions):
        at = df[np.isclose(df["fraction"], fraction)]
        for r, (column, ylabel, scale) in enumerate(rows_spec):
            ax = axes[r, c]
            for method in ordered(at["method"], config.method_order):
                g = at[at["method"] == method].groupby("epoch")[column]
                mean, std = g.mean() * scale, g.std(ddof=1).fillna(0) * scale
                ax.plot(mean.index, mean, label=method, color=colours.get(method), lw=1.3)
                ax.fill_between(
                    mean.index, mean - std, mean + std, color=colours.get(method), alpha=0.15
                )
            ax.set_title(f"{fraction_label(fraction)} labels")
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(f"{modality}: fine-tuning curves (mean ± std over seeds)")
    return fig


def time_to_accuracy_figure(
    tta: Mapping[str, Any] | None, colours: Mapping[str, Any], order: Sequence[str]
) -> Figure | None:
    """10%-label probe test accuracy (final layer) vs pretraining wall time, a panel per
    modality, a line per method, from the time-to-accuracy benchmark JSON."""
    if not tta or not tta["runs"]:
        return None
    modalities = ordered((r["modality"] for r in tta["runs"]), ("image", "speech", "text"))
    fig = Figure(figsize=(4.0 * len(modalities), 3.2), layout="constrained")
    axes = fig.subplots(1, len(modalities), squeeze=False)[0]
    for ax, modality in zip(axes, modalities, strict=True):
        runs = {r["method"]: r for r in tta["runs"] if r["modality"] == modality}
        start = tta["random_init"].get(modality, {}).get("final", {}).get("test_accuracy")
        for method in ordered(runs, order):
            xs = [p["train_s"] for p in runs[method]["points"]]
            ys = [100 * p["final"]["test_accuracy"] for p in runs[method]["points"]]
            if start is not None:
                xs, ys = [0.0, *xs], [100 * start, *ys]
            ax.plot(xs, ys, marker="o", ms=3, lw=1.3, label=method, color=colours.get(method))
        ax.set_title(modality)
        ax.set_xlabel("pretraining wall time (s, 1 thread)")
        ax.set_ylabel("probe test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("time to accuracy: 10%-label linear probe during pretraining (benchmark)")
    return fig


def build_figures(
    inputs: ReportInputs, summary: ReportSummary, config: ReportConfig
) -> dict[str, Figure]:
    """Every figure the report shows, keyed by file name (without ``.png``)."""
    figures: dict[str, Figure | None] = {}
    all_methods = {m for ms in summary.modalities.values() for m in ms.methods} | {
        m for mi in inputs.modalities.values() for m in mi.runs
    }
    colours = method_colours(sorted(all_methods), config.method_order)
    for modality in ordered(inputs.modalities, ("image", "speech", "text")):
        figures[f"{modality}_label_efficiency"] = label_efficiency_figure(
            summary, modality, colours
        )
        figures[f"{modality}_pretraining"] = pretraining_figure(inputs, modality, config, colours)
        figures[f"{modality}_projection"] = projection_figure(inputs, modality, config)
        ms = summary.modalities.get(modality)
        details = inputs.modalities[modality].eval_details or {}
        for method in ms.methods if ms else []:
            if method not in config.focus_methods:
                continue
            choice = choose_confusion(summary, inputs, modality, method)
            if choice is None:
                continue
            matrix = details["confusion"][method][choice.protocol][choice.fraction_key]
            figures[f"{modality}_confusion_{method}"] = confusion_figure(
                matrix,
                details.get("class_names"),
                f"{modality}: {method}, {config.protocol_label(choice.protocol)}, "
                f"{fraction_label(choice.fraction)} labels (test, summed over seeds)",
                config.confusion_annotate_max_classes,
            )
        figures[f"{modality}_finetune_curves"] = finetune_curves_figure(
            inputs, modality, config, colours
        )
    figures["time_to_accuracy"] = time_to_accuracy_figure(
        inputs.time_to_accuracy, colours, config.method_order
    )
    return {name: fig for name, fig in figures.items() if fig is not None}
