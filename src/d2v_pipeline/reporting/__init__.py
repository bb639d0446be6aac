"""The experiment report as a plain library (no Kedro): statistics over seeds, figures,
and HTML/Markdown rendering of one format-neutral document.

Typical use (what the ``report`` pipeline's nodes do)::

    config = report_config_from_dict(params["report"])
    inputs = gather_inputs({"image.eval_metrics": df, ...}, git_commit=sha)
    # (or per lane: lane_inputs("image", {"eval_metrics": df, ...}) -> "image.report_inputs")
    summary = summarise_report(inputs, config)
    figures = build_figures(inputs, summary, config)
    document = build_document(inputs, summary, figures.keys(), config)
    html, md = to_html(document, figures), to_markdown(document, config.figures_dir)
"""

from d2v_pipeline.reporting.compose import build_document, verdict_sentence
from d2v_pipeline.reporting.config import ReportConfig, report_config_from_dict
from d2v_pipeline.reporting.document import Document
from d2v_pipeline.reporting.figures import build_figures
from d2v_pipeline.reporting.inputs import (
    ModalityInputs,
    PretrainRun,
    ReportInputError,
    ReportInputs,
    gather_inputs,
    lane_inputs,
)
from d2v_pipeline.reporting.provenance import flatten, params_diff
from d2v_pipeline.reporting.render import to_html, to_markdown
from d2v_pipeline.reporting.stats import (
    Comparison,
    Interval,
    ReportSummary,
    best_cells,
    label_efficiency_table,
    metrics_dict,
    paired_difference,
    summarise_metrics,
    summarise_report,
)

__all__ = [
    "Comparison",
    "Document",
    "Interval",
    "ModalityInputs",
    "PretrainRun",
    "ReportConfig",
    "ReportInputError",
    "ReportInputs",
    "ReportSummary",
    "best_cells",
    "build_document",
    "build_figures",
    "flatten",
    "gather_inputs",
    "label_efficiency_table",
    "lane_inputs",
    "metrics_dict",
    "paired_difference",
    "params_diff",
    "report_config_from_dict",
    "summarise_metrics",
    "summarise_report",
    "to_html",
    "to_markdown",
    "verdict_sentence",
]
