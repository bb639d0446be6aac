"""Report pipeline: gather and validate -> summarise -> figures -> document -> HTML/Markdown.

It reads the per-modality outputs of ingest, pretrain and finetune by their catalog names
(``image.eval_metrics``, ``image.data2vec.pretrain_history``, ...), so it must list the
modalities and pretrained methods whose outputs exist; the report itself derives the
methods it shows from the tables.
"""

from __future__ import annotations

from collections.abc import Sequence

from kedro.pipeline import Node, Pipeline

from ..pretrain.pipeline import PRETRAINED_METHODS
from .nodes import (
    build_report_figures,
    compose_report,
    gather_report_inputs,
    render_report_html,
    render_report_markdown,
    summarise_results,
)

MODALITIES = ("image", "speech", "text")
MODALITY_INPUTS = (
    "dataset_summary",
    "eval_metrics",
    "eval_details",
    "finetune_curves",
    "feature_projection",
)
RUN_INPUTS = ("pretrain_history", "pretrain_meta")
GLOBAL_INPUTS = ("parameters", "base_parameters", "node_timings", "time_to_accuracy")


def report_input_names(
    modalities: Sequence[str] = MODALITIES, pretrained_methods: Sequence[str] = PRETRAINED_METHODS
) -> list[str]:
    """Catalog names of every dataset the report reads."""
    names = [f"{m}.{d}" for m in modalities for d in MODALITY_INPUTS]
    names += [
        f"{m}.{method}.{d}" for m in modalities for method in pretrained_methods for d in RUN_INPUTS
    ]
    return names + list(GLOBAL_INPUTS)


def create_pipeline(
    modalities: Sequence[str] = MODALITIES,
    pretrained_methods: Sequence[str] = PRETRAINED_METHODS,
    **kwargs,
) -> Pipeline:
    """The ``report`` pipeline (not namespaced: it joins the three modality lanes)."""
    inputs = {name: name for name in report_input_names(modalities, pretrained_methods)}
    return Pipeline(
        [
            Node(
                gather_report_inputs,
                inputs=inputs,
                outputs="report_inputs",
                name="report.gather_inputs",
            ),
            Node(
                summarise_results,
                inputs=["report_inputs", "params:report"],
                outputs=["report_summary", "report_metrics", "label_efficiency"],
                name="report.summarise",
            ),
            Node(
                build_report_figures,
                inputs=["report_inputs", "report_summary"],
                outputs="report_figures",
                name="report.build_figures",
            ),
            Node(
                compose_report,
                inputs=["report_inputs", "report_summary", "report_figures"],
                outputs="report_document",
                name="report.compose",
            ),
            Node(
                render_report_html,
                inputs=["report_document", "report_figures"],
                outputs="report_html",
                name="report.render_html",
            ),
            Node(
                render_report_markdown,
                inputs=["report_document", "params:report"],
                outputs="report_md",
                name="report.render_markdown",
            ),
        ],
        tags=["report"],
    )
