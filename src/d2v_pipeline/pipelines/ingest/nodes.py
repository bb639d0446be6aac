"""Ingest nodes: raw source -> validated arrays, seeded splits, label subsets, summaries.

Plain functions (no Kedro import), kept thin: every node that takes ``params:ingest`` reads
it through :func:`~d2v_pipeline.pipelines.ingest.params.parse_ingest_params` (the schema in
:mod:`d2v_pipeline.schema.ingest`; errors name the key, e.g. ``parameters_ingest.yml:
image.ingest.label_fractions: 1.5 is outside (0, 1]``), and the seeded splitting is in
:mod:`~d2v_pipeline.pipelines.ingest.splits`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch

from d2v_pipeline.io import tensors_sha256
from d2v_pipeline.pipelines.ingest.params import (  # noqa: F401 (re-exported for callers)
    IngestConfig,
    IngestParameterError,
    SplitConfig,
    parse_ingest_params,
)
from d2v_pipeline.pipelines.ingest.splits import (
    fraction_key,
    nested_label_subsets,
    split_indices,
    stratified_subsample,
)
from d2v_pipeline.sources import image as image_sources
from d2v_pipeline.sources import speech as speech_sources
from d2v_pipeline.sources import text as text_sources
from d2v_pipeline.sources.image import ImageData
from d2v_pipeline.sources.speech import SpeechData
from d2v_pipeline.sources.text import TextData

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")

SourceData = ImageData | SpeechData | TextData


# ----------------------------------------------------------------------------- nodes


def _subsample(data: SourceData, cfg: IngestConfig) -> SourceData:
    if cfg.split.max_examples is None or cfg.split.max_examples >= len(data):
        return data
    keep = stratified_subsample(data.labels, cfg.split.max_examples, cfg.split.seed)
    log.info(
        "%s: kept a stratified %d of %d examples (max_examples)", cfg.modality, len(keep), len(data)
    )
    return data.take(keep)


def load_image_source(params: dict[str, Any]) -> ImageData:
    """Read the configured image source (uint8 N×C×H×W + labels), optionally subsampled."""
    cfg = parse_ingest_params("image", params)
    if cfg.source == "mnist_5k":
        data = image_sources.read_mnist_5k()
    elif cfg.source == "torchvision":
        data = image_sources.read_torchvision(cfg.options["name"], cfg.options["root"])
    else:
        data = image_sources.read_image_folder(cfg.options["root"], cfg.options["channels"])
    log.info("image: %d images %s from %s", len(data), data.images.shape[1:], data.source)
    return _subsample(data, cfg)


def load_speech_source(params: dict[str, Any]) -> SpeechData:
    """Synthesise (or reuse the cached) keyword clips, or read a WAV folder."""
    cfg = parse_ingest_params("speech", params)
    opts = cfg.options
    if cfg.source == "espeak":
        data = speech_sources.load_or_synthesize(
            opts["synthesis"], opts["cache_dir"], workers=opts["workers"], progress=opts["progress"]
        )
    else:
        data = speech_sources.read_wav_folder(
            opts["root"], opts["sample_rate"], opts["clip_seconds"]
        )
    log.info(
        "speech: %d clips, %d words, %d speakers from %s",
        len(data),
        len(data.class_names),
        len(data.speaker_names),
        data.source,
    )
    return _subsample(data, cfg)


def load_text_source(params: dict[str, Any]) -> TextData:
    """Read Rotten Tomatoes (default) or a CSV/TSV table; empty texts and duplicates dropped."""
    cfg = parse_ingest_params("text", params)
    opts = cfg.options
    if cfg.source == "rotten_tomatoes":
        data = text_sources.read_rotten_tomatoes(
            include_plot=opts["use_unlabelled"], drop_duplicates=opts["drop_duplicates"]
        )
    else:
        data = text_sources.read_text_table(
            opts["path"],
            opts["text_column"],
            opts["label_column"],
            opts["sep"],
            opts["drop_duplicates"],
        )
    log.info(
        "text: %d labelled and %d unlabelled texts from %s",
        len(data),
        len(data.unlabelled),
        data.source,
    )
    return _subsample(data, cfg)


def split_dataset(data: SourceData, params: dict[str, Any]) -> dict[str, list[int]]:
    """Seeded stratified train/val/test indices into the source rows (speech: by speaker)."""
    cfg = parse_ingest_params(data.modality, params)
    groups = data.groups if data.modality == "speech" else None
    names = data.speaker_names if isinstance(data, SpeechData) else None
    try:
        splits = split_indices(data.labels, data.class_names, cfg.split, groups, names)
    except ValueError as exc:
        note = ""
        if cfg.split.max_examples is not None:
            note = (
                f" (counts are after max_examples: {cfg.split.max_examples} subsampled the "
                f"source; raise it or set it to null to keep every example)"
            )
        raise ValueError(f"{data.modality} ({data.source}): {exc}{note}") from exc
    log.info("%s: split %s", data.modality, ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return {name: [int(i) for i in rows] for name, rows in splits.items()}


def make_label_subsets(
    data: SourceData, splits: dict[str, list[int]], params: dict[str, Any]
) -> dict[str, dict[str, list[int]]]:
    """Nested labelled subsets of train (positions in ``train.x``) at the label fractions,
    one independent draw per evaluation seed: ``{fraction: {draw: rows}}``.

    Evaluation with seed s uses draw s, so the spread over seeds includes which
    examples were labelled (at 1 % that choice dominates the variance).
    """
    cfg = parse_ingest_params(data.modality, params)
    train_labels = data.labels[np.asarray(splits["train"], dtype=np.int64)]
    draws = [
        nested_label_subsets(train_labels, cfg.split.label_fractions, cfg.split.seed, draw=d)
        for d in range(cfg.split.label_subset_draws)
    ]
    return {key: {str(d): draw[key] for d, draw in enumerate(draws)} for key in draws[0]}


def _labels_and_counts(
    data: SourceData, splits: dict[str, list[int]]
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    tensors, counts = {}, {}
    for name in SPLITS:
        rows = np.asarray(splits[name], dtype=np.int64)
        tensors[f"{name}.y"] = torch.from_numpy(data.labels[rows].astype(np.int64))
        counts[name] = len(rows)
    return tensors, counts


def _info(data: SourceData, cfg: IngestConfig, tensors: dict, counts: dict, **extra: Any) -> dict:
    return {
        "modality": data.modality,
        "num_classes": len(data.class_names),
        "class_names": list(data.class_names),
        "input_shape": list(tensors["train.x"].shape[1:]),
        "source": data.source,
        "content_hash": tensors_sha256(tensors),
        "counts": counts,
        "seed": cfg.split.seed,
        "val_fraction": cfg.split.val_fraction,
        "test_fraction": cfg.split.test_fraction,
        "label_fractions": [fraction_key(f) for f in cfg.split.label_fractions],
        # labels that look like a typo of another class (sources.labels), only when there are
        **(
            {"suspect_labels": data.suspect_labels} if getattr(data, "suspect_labels", None) else {}
        ),
        **extra,
    }


def build_image_input(
    data: ImageData, splits: dict[str, list[int]], params: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Float N×C×H×W in [0, 1], normalised per channel with train-only mean/std."""
    cfg = parse_ingest_params("image", params)
    tensors, counts = _labels_and_counts(data, splits)
    train = data.images[np.asarray(splits["train"])].astype(np.float64) / 255.0
    # normalisation statistics from train only: val/test must not leak into preprocessing
    mean = train.mean(axis=(0, 2, 3))
    std = np.maximum(train.std(axis=(0, 2, 3)), 1e-8)
    for name in SPLITS:
        x = data.images[np.asarray(splits[name])].astype(np.float32) / 255.0
        x = (x - mean[None, :, None, None].astype(np.float32)) / std[None, :, None, None].astype(
            np.float32
        )
        tensors[f"{name}.x"] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    info = _info(
        data, cfg, tensors, counts, mean=mean.tolist(), std=std.tolist(), pixel_scale=255.0
    )
    return tensors, info


def normalise_clips(audio: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Per-clip zero mean / unit variance (spec §4: normalised per utterance), float32.

    ``eps`` only guards all-silent clips: quiet clips (peak -12 dBFS, variance ~1e-4) must
    still come out with unit variance, so it is far below any real clip's variance.
    """
    x = audio.astype(np.float64)
    if audio.dtype == np.int16:
        x /= 32768.0
    x -= x.mean(axis=1, keepdims=True)
    x /= np.sqrt(x.var(axis=1, keepdims=True) + eps)
    return x.astype(np.float32)


def build_speech_input(
    data: SpeechData, splits: dict[str, list[int]], params: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Float (N, S) clips, each normalised to zero mean / unit variance, plus speaker ids."""
    cfg = parse_ingest_params("speech", params)
    tensors, counts = _labels_and_counts(data, splits)
    speakers_per_split: dict[str, list[str]] = {}
    for name in SPLITS:
        rows = np.asarray(splits[name], dtype=np.int64)
        tensors[f"{name}.x"] = torch.from_numpy(normalise_clips(data.audio[rows]))
        tensors[f"{name}.speaker"] = torch.from_numpy(data.speakers[rows].astype(np.int64))
        speakers_per_split[name] = sorted({data.speaker_names[s] for s in data.speakers[rows]})
    info = _info(
        data,
        cfg,
        tensors,
        counts,
        sample_rate=data.sample_rate,
        num_speakers=len(data.speaker_names),
        speaker_names=list(data.speaker_names),
        val_speakers=speakers_per_split["val"],
        test_speakers=speakers_per_split["test"],
    )
    return tensors, info


def train_tokenizer(data: TextData, splits: dict[str, list[int]], params: dict[str, Any]) -> str:
    """Byte-level BPE trained on train texts (+ unlabelled texts), never val/test; as JSON."""
    cfg = parse_ingest_params("text", params)
    texts = [data.texts[i] for i in splits["train"]]
    if cfg.options["use_unlabelled"]:
        texts += data.unlabelled
    tokenizer = text_sources.train_tokenizer(
        texts, cfg.options["vocab_size"], cfg.options["min_frequency"]
    )
    log.info("text: tokenizer with %d tokens from %d texts", tokenizer.get_vocab_size(), len(texts))
    return tokenizer.to_str()


def build_text_input(
    data: TextData, splits: dict[str, list[int]], tokenizer_json: str, params: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any], pd.DataFrame]:
    """Token ids (N, L) int64 + attention masks (True = real token), and the raw text table."""
    from tokenizers import Tokenizer

    cfg = parse_ingest_params("text", params)
    tokenizer = Tokenizer.from_str(tokenizer_json)
    seq_len, add_eos = cfg.options["seq_len"], cfg.options["add_eos"]
    tensors, counts = _labels_and_counts(data, splits)
    truncated, rows = {}, []
    parts = {name: [data.texts[i] for i in splits[name]] for name in SPLITS}
    if cfg.options["use_unlabelled"] and data.unlabelled:
        parts["unlabelled"] = list(data.unlabelled)
        counts["unlabelled"] = len(data.unlabelled)
    for name, texts in parts.items():
        ids, mask, truncated[name] = text_sources.encode_texts(tokenizer, texts, seq_len, add_eos)
        tensors[f"{name}.x"] = torch.from_numpy(ids)
        tensors[f"{name}.attention_mask"] = torch.from_numpy(mask)
    for name in SPLITS:
        labels = data.labels[np.asarray(splits[name], dtype=np.int64)]
        rows.append(pd.DataFrame({"split": name, "text": parts[name], "label": labels}))
    special = {f"{t.strip('<>')}_id": tokenizer.token_to_id(t) for t in text_sources.SPECIAL_TOKENS}
    info = _info(
        data,
        cfg,
        tensors,
        counts,
        vocab_size=tokenizer.get_vocab_size(),
        seq_len=seq_len,
        add_eos=add_eos,
        special_tokens=list(text_sources.SPECIAL_TOKENS),
        truncated=truncated,
        **special,
    )
    return tensors, info, pd.concat(rows, ignore_index=True)


def summarise_dataset(
    model_input: dict[str, torch.Tensor],
    dataset_info: dict[str, Any],
    label_subsets: dict[str, dict[str, list[int]]],
) -> dict[str, Any]:
    """Small JSON summary: counts per split and class, shapes, subset sizes, content hash."""
    names = dataset_info["class_names"]
    class_counts = {}
    for split in SPLITS:
        counts = torch.bincount(model_input[f"{split}.y"], minlength=len(names)).tolist()
        class_counts[split] = dict(zip(names, counts, strict=True))
    train_y = model_input["train.y"]
    subsets = {}
    for key, by_draw in label_subsets.items():
        per_class = [
            torch.bincount(train_y[torch.as_tensor(rows, dtype=torch.long)], minlength=len(names))
            for rows in by_draw.values()
        ]
        subsets[key] = {
            "size": len(by_draw["0"]),
            "draws": len(by_draw),
            "min_per_class": int(min(int(c.min()) for c in per_class)),
        }
    summary = {
        "modality": dataset_info["modality"],
        "source": dataset_info["source"],
        "content_hash": dataset_info["content_hash"],
        "num_classes": dataset_info["num_classes"],
        "counts": dataset_info["counts"],
        "class_counts": class_counts,
        "label_subsets": subsets,
        "arrays": {
            key: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
            for key, t in sorted(model_input.items())
        },
    }
    if dataset_info.get("suspect_labels"):
        summary["suspect_labels"] = dataset_info["suspect_labels"]
    if "train.speaker" in model_input:
        speakers = {s: set(model_input[f"{s}.speaker"].tolist()) for s in SPLITS}
        shared = {
            f"{a}_{b}": len(speakers[a] & speakers[b])
            for a, b in (("train", "val"), ("train", "test"), ("val", "test"))
        }
        summary["speakers"] = {s: len(v) for s, v in speakers.items()}
        summary["speakers_shared"] = shared  # speakers in both splits of each pair
        summary["speakers_disjoint"] = not any(shared.values())
    if "truncated" in dataset_info:
        summary["truncated"] = dataset_info["truncated"]
        summary["mean_tokens"] = {
            s: round(float(model_input[f"{s}.attention_mask"].sum(1).float().mean()), 2)
            for s in SPLITS
        }
    return summary
