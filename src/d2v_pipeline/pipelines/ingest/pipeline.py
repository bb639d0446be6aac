"""Ingest pipeline: one lane per modality, all built from the same template.

Per namespace m (image, speech, text):

    params:ingest -> load_source -> source_data -> split_dataset -> splits
    source_data + splits -> build_model_input -> model_input, dataset_info
    source_data + splits -> make_label_subsets -> label_subsets
    model_input + dataset_info + label_subsets -> summarise_dataset -> dataset_summary

Text adds train_tokenizer (train split + unlabelled texts only) before build_model_input,
which then also writes the text table used by the TF-IDF baseline.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from d2v_pipeline.pipelines.ingest import nodes

MODALITIES = ("image", "speech", "text")

# The only per-modality differences: how the source is read and how arrays are built.
_READERS = {
    "image": (nodes.load_image_source, nodes.build_image_input),
    "speech": (nodes.load_speech_source, nodes.build_speech_input),
    "text": (nodes.load_text_source, nodes.build_text_input),
}


def _lane(modality: str) -> Pipeline:
    """The ingest template instantiated for one modality namespace."""
    load, build = _READERS[modality]
    build_inputs = ["source_data", "splits", "params:ingest"]
    build_outputs = ["model_input", "dataset_info"]
    extra = []
    if modality == "text":
        extra.append(
            Node(
                nodes.train_tokenizer,
                ["source_data", "splits", "params:ingest"],
                "tokenizer",
                name="train_tokenizer",
            )
        )
        build_inputs.insert(2, "tokenizer")
        build_outputs.append("texts")
    return Pipeline(
        [
            Node(load, "params:ingest", "source_data", name="load_source"),
            Node(
                nodes.split_dataset,
                ["source_data", "params:ingest"],
                "splits",
                name="split_dataset",
            ),
            *extra,
            Node(build, build_inputs, build_outputs, name="build_model_input"),
            Node(
                nodes.make_label_subsets,
                ["source_data", "splits", "params:ingest"],
                "label_subsets",
                name="make_label_subsets",
            ),
            Node(
                nodes.summarise_dataset,
                ["model_input", "dataset_info", "label_subsets"],
                "dataset_summary",
                name="summarise_dataset",
            ),
        ],
        namespace=modality,
        tags=["ingest"],
    )


def create_pipeline(**kwargs: object) -> Pipeline:
    """Three parallel ingest lanes: image, speech and text."""
    return sum((_lane(m) for m in MODALITIES), Pipeline([]))
