"""The report's figures (matplotlib, object-oriented API: no pyplot state, no display).

Each builder returns a :class:`matplotlib.figure.Figure`, or ``None`` when its input is
absent or empty (the document then says "not run"). Names are stable so report.md can
link ``figures/<name>.png``: ``<m>_label_efficiency``, ``<m>_pretraining``,
``<m>_projection``, ``<m>_confusion_<method>``, ``<m>_finetune_curves``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator

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

# Okabe & Ito's colour-blind-safe palette (black last); each method also gets its own
# marker and line style, so no curve is told apart by colour alone
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1.5, 1, 1.5)), (0, (3, 1)), (0, (1, 2)), "-")
CONTEXT_STYLE = {"color": "0.4", "marker": "x", "linestyle": (0, (6, 2))}
# Figures are drawn at most FIGURE_WIDTH inches wide at the report's 110 dpi (about the
# page's 1,040 px text column), so fonts keep their size on screen: ticks >= 9 pt
FIGURE_WIDTH = 9.4
RC = {
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5,
    "legend.fontsize": 9.5,
    "figure.titlesize": 11.5,
}


def method_styles(methods: Sequence[str], order: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A stable colour, marker and line style per method: the preferred order first."""
    names = ordered([*order, *methods], order)
    return {
        m: {
            "color": PALETTE[i % len(PALETTE)],
            "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[i % len(LINESTYLES)],
        }
        for i, m in enumerate(names)
    }


def method_colours(methods: Sequence[str], order: Sequence[str]) -> dict[str, Any]:
    """The colour of each method (see :func:`method_styles`)."""
    return {m: s["color"] for m, s in method_styles(methods, order).items()}


def _styled(builder):
    """Run a figure builder under the report's font sizes (text keeps its size once drawn)."""

    @functools.wraps(builder)
    def wrapper(*args, **kwargs):
        from matplotlib import rc_context

        with rc_context(RC):
            return builder(*args, **kwargs)

    return wrapper


def shared_legend(fig: Figure, axes: Sequence[Any], ncols: int | None = None) -> None:
    """One legend for the whole figure, below the panels, from every panel's labelled
    artists (each label once)."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if not label.startswith("_"):
                seen.setdefault(label, handle)
    if seen:
        fig.legend(
            list(seen.values()),
            list(seen),
            loc="outside lower center",
            ncols=ncols or min(len(seen), 5),
            frameon=False,
        )


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


@_styled
def label_efficiency_figure(
    summary: ReportSummary, modality: str, styles: Mapping[str, Mapping[str, Any]]
) -> Figure | None:
    """Primary metric vs label fraction (log x), one panel per protocol, one line per
    method, error bars = std over seeds; raw-input baselines as grey context lines."""
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
    fig = Figure(figsize=(FIGURE_WIDTH, 3.7), layout="constrained")
    axes = fig.subplots(1, len(protocols), squeeze=False, sharey=True)[0]
    for ax, protocol in zip(axes, protocols, strict=True):
        panel = main[main["protocol"] == protocol]
        methods = ordered(panel["method"], cfg.method_order)
        for i, method in enumerate(methods):
            rows = panel[panel["method"] == method].sort_values("fraction")
            # nudge each method sideways (log x) so equal scores and error bars stay visible
            dodge = 1.07 ** (i - (len(methods) - 1) / 2)
            ax.errorbar(
                rows["fraction"] * dodge,
                rows["mean"] * 100,
                yerr=rows["std"].fillna(0) * 100,
                capsize=3,
                ms=5,
                lw=1.5,
                label=method,
                **styles.get(method, {}),
            )
        for (method, ctx_protocol), rows in context.groupby(["method", "protocol"]):
            if ctx_protocol == protocol:
                continue
            rows = rows.sort_values("fraction")
            ax.errorbar(
                rows["fraction"],
                rows["mean"] * 100,
                yerr=rows["std"].fillna(0) * 100,
                capsize=3,
                ms=5,
                lw=1.3,
                label=f"{method} ({cfg.protocol_label(str(ctx_protocol))})",
                **CONTEXT_STYLE,
            )
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(fractions))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([fraction_label(f) for f in fractions])
        ax.set_xlim(min(fractions) / 1.6, max(fractions) * 1.6)
        ax.set_title(cfg.protocol_label(protocol))
        ax.set_xlabel("labelled fraction")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"test {cfg.primary_metric} (%)")
    shared_legend(fig, axes)
    fig.suptitle(f"{modality}: label efficiency (mean ± std over seeds)")
    return fig


@_styled
def pretraining_figure(
    inputs: ReportInputs,
    modality: str,
    config: ReportConfig,
    styles: Mapping[str, Mapping[str, Any]],
) -> Figure | None:
    """Loss, target std, prediction std, τ, lr (and throughput) vs step, one line per
    method; spec §9 collapse thresholds drawn on the std panels.

    Methods often share a τ or lr schedule, so their curves coincide: each method is drawn
    with its own line style and staggered markers, wider lines first, so every curve
    stays visible on top of the others."""
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
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(FIGURE_WIDTH, 2.7 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    thresholds = {"target_std": config.collapse_target_std, "pred_std": config.collapse_pred_std}
    methods = ordered(histories, config.method_order)
    for ax, (column, title, log) in zip(axes, panels, strict=False):
        same = _identical_series(histories, methods, column)
        for i, method in enumerate(methods):
            h = histories[method]
            if column not in h.columns or not h[column].notna().any() or method not in same:
                continue
            y = h[column]
            if log:
                y = y.where(y > 0)  # a log axis cannot show 0; the gap is visible
            n = len(h)
            every = max(1, n // 6)
            ax.plot(
                h["step"],
                y,
                label=method,
                lw=2.6 - 0.6 * min(i, 3),
                ms=5,
                markevery=(min(i * max(1, every // len(methods)), n - 1), every),
                zorder=2 + i,
                **styles.get(method, {}),
            )
            meta = runs[method].meta or {}
            if meta.get("collapsed") and meta.get("collapse_step") is not None:
                ax.axvline(
                    meta["collapse_step"],
                    color=styles.get(method, {}).get("color"),
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
        # e.g. a shared lr schedule is drawn once, and the title says whose it is
        shared = [" = ".join(group) for group in same.values() if len(group) > 1]
        ax.set_title(title + ("\n(" + "; ".join(shared) + ")" if shared else ""))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    shared_legend(fig, axes)
    fig.suptitle(f"{modality}: pretraining")
    return fig


def _identical_series(
    histories: Mapping[str, pd.DataFrame], methods: Sequence[str], column: str
) -> dict[str, list[str]]:
    """Methods whose ``column`` is the same curve (same steps and values) are drawn once:
    ``{first method: [it and the methods that share its curve]}``."""
    groups: dict[str, list[str]] = {}
    for method in methods:
        h = histories[method]
        if column not in h.columns or not h[column].notna().any():
            continue
        for first, members in groups.items():
            g = histories[first]
            if (
                len(g) == len(h)
                and np.allclose(g["step"], h["step"])
                and np.allclose(g[column], h[column], equal_nan=True)
            ):
                members.append(method)
                break
        else:
            groups[method] = [method]
    return groups


def _label_names(labels: pd.Series, class_names: Sequence[str] | None) -> pd.Series:
    numeric = pd.to_numeric(labels, errors="coerce")
    if class_names and numeric.notna().all() and (numeric % 1 == 0).all():
        idx = numeric.astype(int)
        if idx.between(0, len(class_names) - 1).all():
            return idx.map(lambda i: str(class_names[i]))
    return labels.astype(str)


@_styled
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
    ncols = min(len(methods), 4)
    nrows = math.ceil(len(methods) / ncols)
    side = min(2.3, (FIGURE_WIDTH - 1.6) / ncols)
    fig = Figure(figsize=(side * ncols + 1.6, side * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    rng = np.random.default_rng(0)  # fixed subsample: the same figure every run
    for ax in axes[len(methods) :]:
        ax.set_visible(False)
    for ax, method in zip(axes, methods, strict=False):
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
        fig.legend(
            handles=handles,
            loc="outside right center",
            title="class",
            ncols=1 if len(labels) <= 10 else 2,
            frameon=False,
        )
    fig.suptitle(f"{modality}: test features, 2-D PCA (colour = class)")
    return fig


@_styled
def confusion_figure(
    matrix: Sequence[Sequence[int]],
    class_names: Sequence[str] | None,
    title: str,
    annotate_max: int = 12,
) -> Figure:
    """Row-normalised confusion heatmap (rows = true class), counts written in small grids.

    Small on purpose: the report shows it at most ~350 px tall; a grid of many classes
    grows, and its full size is one tap away."""
    counts = np.asarray(matrix, dtype=float)
    n = counts.shape[0]
    names = [str(c) for c in class_names] if class_names else [str(i) for i in range(n)]
    names = [s if len(s) <= 14 else s[:13] + "…" for s in names]
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    side = float(np.clip(0.22 * n + 1.2, 3.2, 7.0))
    fig = Figure(figsize=(side + 0.9, side), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="share of the true class", shrink=0.8)
    ticks = np.arange(n)
    small = 9.5 if n <= 12 else 8
    slanted = n > 12 or max(len(s) for s in names) > 3  # long names would collide
    ax.set_xticks(ticks, names, rotation=50 if slanted else 0, ha="right" if slanted else "center")
    ax.set_yticks(ticks, names)
    ax.tick_params(labelsize=small)
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
                    fontsize=8.5 if n <= 10 else 7,
                    color="white" if share[i, j] > 0.55 else "black",
                )
    ax.set_title(title, fontsize=10)
    return fig


@_styled
def finetune_curves_figure(
    inputs: ReportInputs,
    modality: str,
    config: ReportConfig,
    styles: Mapping[str, Mapping[str, Any]],
) -> Figure | None:
    """Validation accuracy (and training loss) vs epoch, one panel per label fraction,
    mean over seeds with a ± std band; every epoch is a marker, so a run that stopped after
    one epoch is still a visible point."""
    mi = inputs.modalities.get(modality)
    df = mi.finetune_curves if mi else None
    if df is None or df.empty:
        return None
    rows_spec = [("val_accuracy", "validation accuracy (%)", 100.0)]
    if "train_loss" in df.columns and df["train_loss"].notna().any():
        rows_spec.append(("train_loss", "training loss", 1.0))
    fractions = sorted(df["fraction"].unique())
    width = min(FIGURE_WIDTH, 3.6 * len(fractions) + 1.0)
    fig = Figure(figsize=(width, 2.6 * len(rows_spec) + 0.6), layout="constrained")
    axes = fig.subplots(len(rows_spec), len(fractions), squeeze=False)
    for c, fraction in enumerate(fractions):
        at = df[np.isclose(df["fraction"], fraction)]
        for r, (column, ylabel, scale) in enumerate(rows_spec):
            ax = axes[r, c]
            methods = ordered(at["method"], config.method_order)
            single = at["epoch"].nunique() == 1
            for i, method in enumerate(methods):
                g = at[at["method"] == method].groupby("epoch")[column]
                mean, std = g.mean() * scale, g.std(ddof=1).fillna(0) * scale
                style = styles.get(method, {})
                # one epoch only: spread the methods' points sideways so none hides another
                x = mean.index + (0.08 * (i - (len(methods) - 1) / 2) if single else 0.0)
                if single:
                    ax.errorbar(x, mean, yerr=std, label=method, ms=6, capsize=3, **style)
                    continue
                ax.plot(x, mean, label=method, lw=1.5, ms=5, **style)
                ax.fill_between(x, mean - std, mean + std, color=style.get("color"), alpha=0.15)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if single:
                epoch = float(at["epoch"].iloc[0])
                ax.set_xlim(epoch - 1, epoch + 1)
            ax.set_title(f"{fraction_label(fraction)} labels")
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
    shared_legend(fig, axes.ravel())
    fig.suptitle(f"{modality}: fine-tuning curves (mean ± std over seeds)")
    return fig


@_styled
def time_to_accuracy_figure(
    tta: Mapping[str, Any] | None,
    styles: Mapping[str, Mapping[str, Any]],
    order: Sequence[str],
) -> Figure | None:
    """10%-label probe test accuracy (final layer) vs pretraining wall time, a panel per
    modality, a line per method, from the time-to-accuracy benchmark JSON."""
    if not tta or not tta["runs"]:
        return None
    modalities = ordered((r["modality"] for r in tta["runs"]), ("image", "speech", "text"))
    fig = Figure(figsize=(FIGURE_WIDTH, 3.5), layout="constrained")
    axes = fig.subplots(1, len(modalities), squeeze=False)[0]
    for ax, modality in zip(axes, modalities, strict=True):
        runs = {r["method"]: r for r in tta["runs"] if r["modality"] == modality}
        start = tta["random_init"].get(modality, {}).get("final", {}).get("test_accuracy")
        for method in ordered(runs, order):
            xs = [p["train_s"] for p in runs[method]["points"]]
            ys = [100 * p["final"]["test_accuracy"] for p in runs[method]["points"]]
            if start is not None:
                xs, ys = [0.0, *xs], [100 * start, *ys]
            ax.plot(xs, ys, ms=4, lw=1.5, label=method, **styles.get(method, {}))
        ax.set_title(modality)
        ax.set_xlabel("pretraining wall time (s)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("probe test accuracy (%)")
    shared_legend(fig, axes)
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
    styles = method_styles(sorted(all_methods), config.method_order)
    for modality in ordered(inputs.modalities, ("image", "speech", "text")):
        figures[f"{modality}_label_efficiency"] = label_efficiency_figure(summary, modality, styles)
        figures[f"{modality}_pretraining"] = pretraining_figure(inputs, modality, config, styles)
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
                f"{modality}: {method}\n{config.protocol_label(choice.protocol)}, "
                f"{fraction_label(choice.fraction)} labels",
                config.confusion_annotate_max_classes,
            )
        figures[f"{modality}_finetune_curves"] = finetune_curves_figure(
            inputs, modality, config, styles
        )
    figures["time_to_accuracy"] = time_to_accuracy_figure(
        inputs.time_to_accuracy, styles, config.method_order
    )
    return {name: fig for name, fig in figures.items() if fig is not None}
