"""Tune pipeline: per modality lane, run (or continue) the study, then export it.

Not part of ``__default__`` (see pipeline_registry.NOT_IN_DEFAULT): run it with
``kedro run --pipeline tune [--namespaces image]``.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from .nodes import export_tuning_results, run_tuning_study

MODALITIES = ("image", "speech", "text")


def _lane() -> Pipeline:
    return Pipeline(
        [
            Node(
                run_tuning_study,
                inputs=[
                    "model_input",
                    "label_subsets",
                    "dataset_info",
                    "params:pretrain",
                    "params:tune",
                    "params:runtime",
                    "tune_study",
                ],
                outputs="tune_run",
                name="run_study",
            ),
            Node(
                export_tuning_results,
                inputs=["tune_run", "dataset_info", "params:pretrain", "params:tune", "tune_study"],
                outputs=["tune_trials", "tune_best_params", "tune_summary", "tune_figures"],
                name="export_study",
            ),
        ],
        tags=["tune"],
    )


def create_pipeline(**kwargs) -> Pipeline:
    """One lane per modality namespace, all from the same template."""
    return sum((Pipeline(_lane(), namespace=m) for m in MODALITIES), Pipeline([]))
