"""Finetune pipeline: per modality lane, evaluate each method's encoder and a raw-input baseline.

Per namespace m (image, speech, text) and method (data2vec, data2vec2, masked_recon,
scratch)::

    m.model_input + m.label_subsets + m.dataset_info + m.<method>.encoder
        + m.<method>.pretrain_meta + params:m.finetune + params:m.runtime -> evaluate_<method>
        -> m.<method>.method_{metrics,details,curves,projection,predictions}
    the same inputs (+ m.texts for text) -> evaluate_raw_input -> m.raw_input.method_*
    all of them -> collect_evaluation
        -> m.eval_metrics, m.eval_details, m.finetune_curves, m.feature_projection,
           m.test_predictions
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from ..pretrain.pipeline import PRETRAINED_METHODS
from .nodes import collect_evaluation, evaluate_encoder, evaluate_raw_input, evaluate_raw_text

MODALITIES = ("image", "speech", "text")
METHODS = (*PRETRAINED_METHODS, "scratch")
PER_METHOD = (
    "method_metrics", "method_details", "method_curves", "method_projection", "method_predictions"
)  # fmt: skip
PER_RAW = ("method_metrics", "method_details", "method_predictions")
MERGED = ("eval_metrics", "eval_details", "finetune_curves", "feature_projection")
MERGED += ("test_predictions",)
WEIGHTS = ("encoder", "pretrain_meta")  # what evaluate_<method> reads of a pretraining run


def _lane(modality: str) -> Pipeline:
    """The template for one modality. Its nodes are built inside the namespace (full dataset
    names such as ``image.data2vec.method_metrics``) instead of being namespaced afterwards:
    a template name with a method part (``data2vec.method_metrics``) outside any namespace
    trips Kedro's "dataset names contain '.'" warning. Node and dataset names are the same."""

    def ns(name: str) -> str:
        return f"{modality}.{name}"

    shared = [ns("model_input"), ns("label_subsets"), ns("dataset_info")]
    params = f"params:{modality}.finetune"
    runtime = f"params:{modality}.runtime"  # device, precision, processes of the encoder runs
    nodes = [
        Node(
            evaluate_encoder,
            inputs=[*shared, *(ns(f"{method}.{d}") for d in WEIGHTS), params, runtime],
            outputs=[ns(f"{method}.{name}") for name in PER_METHOD],
            name=f"evaluate_{method}",
            namespace=modality,
            tags=["finetune", method],
        )
        for method in METHODS
    ]
    text = modality == "text"
    nodes += [
        Node(
            evaluate_raw_text if text else evaluate_raw_input,
            inputs=[*shared, params, *([ns("texts")] if text else [])],
            outputs=[ns(f"raw_input.{name}") for name in PER_RAW],
            name="evaluate_raw_input",
            namespace=modality,
            tags=["finetune", "raw_input"],
        ),
        Node(
            collect_evaluation,
            inputs=[
                ns("dataset_info"),
                *(ns(f"{m}.{name}") for m in METHODS for name in PER_METHOD),
                *(ns(f"raw_input.{name}") for name in PER_RAW),
            ],
            outputs=[ns(name) for name in MERGED],
            name="collect_evaluation",
            namespace=modality,
            tags=["finetune"],
        ),
    ]
    return Pipeline(nodes)


def create_pipeline(**kwargs) -> Pipeline:
    """One lane per modality namespace, all from the same template."""
    return sum((_lane(m) for m in MODALITIES), Pipeline([]))
