"""Finetune pipeline: per modality lane, evaluate each method's encoder and a raw-input baseline."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from ..pretrain.pipeline import PRETRAINED_METHODS
from .nodes import collect_evaluation, evaluate_encoder, evaluate_raw_input, evaluate_raw_text

MODALITIES = ("image", "speech", "text")
METHODS = (*PRETRAINED_METHODS, "scratch")
PER_METHOD = ("method_metrics", "method_details", "method_curves", "method_projection")


def _lane(modality: str) -> Pipeline:
    nodes = [
        Node(
            evaluate_encoder,
            inputs=[
                "model_input",
                "label_subsets",
                "dataset_info",
                f"{method}.encoder",
                f"{method}.pretrain_meta",
                "params:finetune",
            ],
            outputs=[f"{method}.{name}" for name in PER_METHOD],
            name=f"evaluate_{method}",
            tags=["finetune", method],
        )
        for method in METHODS
    ]
    raw_inputs = ["model_input", "label_subsets", "dataset_info", "params:finetune"]
    nodes += [
        Node(
            evaluate_raw_text if modality == "text" else evaluate_raw_input,
            inputs=raw_inputs + (["texts"] if modality == "text" else []),
            outputs=["raw_input.method_metrics", "raw_input.method_details"],
            name="evaluate_raw_input",
            tags=["finetune", "raw_input"],
        ),
        Node(
            collect_evaluation,
            inputs=[
                "dataset_info",
                *(f"{m}.{name}" for m in METHODS for name in PER_METHOD),
                "raw_input.method_metrics",
                "raw_input.method_details",
            ],
            outputs=["eval_metrics", "eval_details", "finetune_curves", "feature_projection"],
            name="collect_evaluation",
            tags=["finetune"],
        ),
    ]
    return Pipeline(nodes, namespace=modality)


def create_pipeline(**kwargs) -> Pipeline:
    """One lane per modality namespace, all from the same template."""
    return sum((_lane(m) for m in MODALITIES), Pipeline([]))
