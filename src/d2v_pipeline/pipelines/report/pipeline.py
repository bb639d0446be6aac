"""Report pipeline: one bundle per lane -> gather -> summarise -> figures -> document ->
HTML/Markdown.

Each lane's datasets (``image.eval_metrics``, ``image.data2vec.pretrain_history``, ...) go
into one node in the lane's namespace (``image.report_bundle``) that validates them into one
in-memory dataset (``image_report_inputs``: no dot, since the top-level gather node reads it
and Kedro reserves dotted names for a namespace's own nodes), so Kedro-Viz shows one input
per lane into the report. A missing file loads as ``None``; a lane whose eval_metrics are
missing is reported as not run (with the command that produces it), so a report after
``kedro run --namespaces image`` covers the image lane. The pipeline must list the
modalities and pretrained methods whose outputs may exist; the report itself derives the
methods it shows from the tables.
"""

from __future__ import annotations

from collections.abc import Sequence

from kedro.pipeline import Node, Pipeline

from d2v_pipeline.reporting.inputs import (
    GLOBAL_DATASETS,
    LANE_BUNDLE,
    MODALITY_DATASETS,
    MODALITY_ORDER,
    RUN_DATASETS,
)

from ..pretrain.pipeline import PRETRAINED_METHODS
from .nodes import (
    build_report_figures,
    compose_report,
    gather_report_inputs,
    lane_bundler,
    render_report_html,
    render_report_markdown,
    summarise_results,
)

# the dataset names come from the report's input contract (reporting/inputs.py), once
MODALITIES = MODALITY_ORDER
MODALITY_INPUTS = MODALITY_DATASETS
RUN_INPUTS = RUN_DATASETS
GLOBAL_INPUTS = GLOBAL_DATASETS


def lane_input_names(pretrained_methods: Sequence[str] = PRETRAINED_METHODS) -> list[str]:
    """Names of one lane's report inputs, inside its namespace (``eval_metrics``,
    ``data2vec.pretrain_meta``, ...)."""
    runs = [f"{method}.{d}" for method in pretrained_methods for d in RUN_INPUTS]
    return [*MODALITY_INPUTS, *runs]


def report_input_names(
    modalities: Sequence[str] = MODALITIES, pretrained_methods: Sequence[str] = PRETRAINED_METHODS
) -> list[str]:
    """Catalog names of every dataset the report reads."""
    lanes = [f"{m}.{d}" for m in modalities for d in lane_input_names(pretrained_methods)]
    return lanes + list(GLOBAL_INPUTS)


def bundle_name(modality: str) -> str:
    """The catalog name of a lane's bundle: ``image_report_inputs``."""
    return f"{modality}_{LANE_BUNDLE}"


def lane_bundle_node(modality: str, pretrained_methods: Sequence[str]) -> Node:
    """``<m>.report_bundle``: the lane's datasets -> ``<m>_report_inputs`` (validated)."""
    names = lane_input_names(pretrained_methods)
    return Node(
        lane_bundler(modality),
        inputs={name.replace(".", "__"): f"{modality}.{name}" for name in names},
        outputs=bundle_name(modality),
        name="report_bundle",
        namespace=modality,
    )


def create_pipeline(
    modalities: Sequence[str] = MODALITIES,
    pretrained_methods: Sequence[str] = PRETRAINED_METHODS,
    **kwargs,
) -> Pipeline:
    """The ``report`` pipeline: a bundle node in each lane, then nodes that join the lanes."""
    # gather_report_inputs takes the bundles by their lane-qualified keyword (image.report_inputs)
    bundles = {f"{m}.{LANE_BUNDLE}": bundle_name(m) for m in modalities}
    return Pipeline(
        [
            *(lane_bundle_node(m, pretrained_methods) for m in modalities),
            Node(
                gather_report_inputs,
                inputs={**bundles, **{name: name for name in GLOBAL_INPUTS}},
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
