"""Report nodes: thin wrappers from catalog datasets to :mod:`d2v_pipeline.reporting`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from d2v_pipeline.reporting import (
    Document,
    ModalityInputs,
    ReportInputs,
    ReportSummary,
    build_document,
    build_figures,
    gather_inputs,
    label_efficiency_table,
    lane_inputs,
    metrics_dict,
    report_config_from_dict,
    summarise_report,
    to_html,
    to_markdown,
)


def lane_bundler(modality: str) -> Callable[..., ModalityInputs]:
    """The node function that validates one lane's datasets into one bundle.

    Its keyword arguments are the lane's dataset names with ``__`` for ``.``
    (``data2vec__pretrain_meta`` for ``<m>.data2vec.pretrain_meta``); missing files arrive
    as ``None``, and the lane counts as run when its eval_metrics exist.
    """

    def bundle(**datasets: Any) -> ModalityInputs:
        return lane_inputs(modality, {k.replace("__", "."): v for k, v in datasets.items()})

    bundle.__name__ = bundle.__qualname__ = f"bundle_{modality}_report_inputs"
    bundle.__doc__ = f"Validate the {modality} lane's report inputs into one bundle."
    return bundle


def gather_report_inputs(**datasets: Any) -> ReportInputs:
    """Join the lane bundles (``<m>.report_inputs``) and the global inputs into one
    ReportInputs; lanes without eval_metrics are listed as missing.

    The current git commit is recorded here, at report time, next to the commits that the
    pretraining runs recorded in their metadata.
    """
    from d2v_pipeline.experiment import git_commit  # imports torch: only when the node runs

    return gather_inputs(datasets, git_commit=git_commit())


def summarise_results(
    inputs: ReportInputs, params: Mapping[str, Any] | None
) -> tuple[ReportSummary, dict[str, Any], pd.DataFrame]:
    """Means/stds over seeds and paired differences; metrics.json and label_efficiency.csv.

    Args:
        inputs: validated report inputs.
        params: the ``report`` parameters block (parameters_report.yml).
    Returns:
        The summary (in memory), the metrics dict and the label-efficiency table.
    """
    summary = summarise_report(inputs, report_config_from_dict(params))
    return summary, metrics_dict(summary, inputs), label_efficiency_table(summary)


def build_report_figures(inputs: ReportInputs, summary: ReportSummary) -> dict[str, Figure]:
    """All figures, keyed by file name (saved as ``figures/<name>.png``)."""
    return build_figures(inputs, summary, summary.config)


def compose_report(
    inputs: ReportInputs, summary: ReportSummary, figures: Mapping[str, Any]
) -> Document:
    """The report document; ``figures`` only tells which figures exist."""
    return build_document(inputs, summary, list(figures), summary.config)


def render_report_html(document: Document, figures: Mapping[str, Any]) -> str:
    """Self-contained HTML: figures (Figures, PNG paths or bytes) embedded as data URIs."""
    return to_html(document, figures)


def render_report_markdown(document: Document, params: Mapping[str, Any] | None) -> str:
    """Markdown linking the PNGs relative to report.md (``report.figures_dir``)."""
    return to_markdown(document, report_config_from_dict(params).figures_dir)
