"""Pretrain pipeline: per modality lane, one node per method, plus the scratch encoder.

Per namespace m (image, speech, text) and pretraining method (data2vec, data2vec2,
masked_recon)::

    m.model_input + m.dataset_info + params:m.pretrain + params:m.runtime -> pretrain_<method>
        -> m.<method>.encoder, m.<method>.pretrain_meta, m.<method>.pretrain_history
    m.dataset_info + params:m.pretrain -> init_scratch_encoder -> m.scratch.encoder, ...

``params:m.runtime`` (conf/base/parameters_runtime.yml) says where training runs: device,
precision, processes. The scratch encoder is only initialised (no runtime).

The resumable training state is not a dataset: it lives in the folder the parameter
``<m>.pretrain.state_dir`` names (conf/<env>/parameters_pretrain.yml, under that env's data
root; a plain path, since ``dvc exp run -S`` cannot rewrite a params file holding
``${globals:...}``), so the map shows no free input for it.
"""

from __future__ import annotations

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from .nodes import init_scratch_encoder, pretrain_encoder

MODALITIES = ("image", "speech", "text")
# Every pretraining method of the default run; fine-tuning adds "scratch", the report reads
# all of them. A method's config lives in parameters_pretrain.yml under <modality>.pretrain.
PRETRAINED_METHODS = ("data2vec", "data2vec2", "masked_recon")


def _lane(modality: str) -> Pipeline:
    """The template for one modality. Its nodes are built inside the namespace (full dataset
    names such as ``image.data2vec.encoder``) instead of being namespaced afterwards: a
    template name with a method part (``data2vec.encoder``) outside any namespace trips
    Kedro's "dataset names contain '.'" warning. Node and dataset names are the same."""

    def ns(name: str) -> str:
        return f"{modality}.{name}"

    params = f"params:{modality}.pretrain"
    runtime = f"params:{modality}.runtime"
    nodes = [
        Node(
            update_wrapper(partial(pretrain_encoder, method=method), pretrain_encoder),
            inputs=[ns("model_input"), ns("dataset_info"), params, runtime],
            outputs=[ns(f"{method}.{d}") for d in ("encoder", "pretrain_meta", "pretrain_history")],
            name=f"pretrain_{method}",
            namespace=modality,
            tags=["pretrain", method],
        )
        for method in PRETRAINED_METHODS
    ]
    nodes.append(
        Node(
            init_scratch_encoder,
            inputs=[ns("dataset_info"), params],
            outputs=[ns("scratch.encoder"), ns("scratch.pretrain_meta")],
            name="init_scratch_encoder",
            namespace=modality,
            tags=["pretrain", "scratch"],
        )
    )
    return Pipeline(nodes)


def create_pipeline(**kwargs) -> Pipeline:
    """One lane per modality namespace, all from the same template."""
    return sum((_lane(m) for m in MODALITIES), Pipeline([]))
