"""Pretrain pipeline: per modality lane, one node per method, plus the scratch encoder."""

from __future__ import annotations

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from .nodes import init_scratch_encoder, pretrain_encoder

MODALITIES = ("image", "speech", "text")
# Every pretraining method of the default run; fine-tuning adds "scratch", the report reads
# all of them. A method's config lives in parameters_pretrain.yml under <modality>.pretrain.
PRETRAINED_METHODS = ("data2vec", "data2vec2", "masked_recon")


def _pretrain_node(method: str) -> Node:
    func = update_wrapper(partial(pretrain_encoder, method=method), pretrain_encoder)
    return Node(
        func,
        inputs=["model_input", "dataset_info", "params:pretrain", f"{method}.train_state"],
        outputs=[f"{method}.encoder", f"{method}.pretrain_meta", f"{method}.pretrain_history"],
        name=f"pretrain_{method}",
        tags=["pretrain", method],
    )


def _lane() -> Pipeline:
    scratch = Node(
        init_scratch_encoder,
        inputs=["dataset_info", "params:pretrain"],
        outputs=["scratch.encoder", "scratch.pretrain_meta"],
        name="init_scratch_encoder",
        tags=["pretrain", "scratch"],
    )
    return Pipeline([*(_pretrain_node(m) for m in PRETRAINED_METHODS), scratch])


def create_pipeline(**kwargs) -> Pipeline:
    """One lane per modality namespace, all from the same template."""
    return sum(
        (Pipeline(_lane(), namespace=m) for m in MODALITIES),
        Pipeline([]),
    )
