"""Pretraining nodes: parameters + ingested data -> library calls -> weights, metadata, history.

Every method of a modality uses the same encoder config, data and training budget
(``<m>.pretrain.encoder`` and ``<m>.pretrain.train``), so the comparison is fair;
only the method block (``<m>.pretrain.data2vec`` / ``masked_recon``) differs.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from d2v_pipeline.data2vec import config as cfgs
from d2v_pipeline.data2vec.encoders import build_encoder
from d2v_pipeline.data2vec.models import build_pretrain_model
from d2v_pipeline.data2vec.train import pretrain
from d2v_pipeline.experiment import encoder_config, environment, pretraining_data
from d2v_pipeline.io import EncoderWeights, encoder_header, sha256_bytes, tensors_sha256
from d2v_pipeline.schema.check import validated
from d2v_pipeline.schema.pretrain import ImagePretrain, SpeechPretrain, TextPretrain

log = logging.getLogger(__name__)

PARAMS_FILE = "parameters_pretrain.yml"
_SCHEMA = {"image": ImagePretrain, "speech": SpeechPretrain, "text": TextPretrain}

# Where this tiny build departs from the paper on purpose (data2vec.md §4 "Rec." sizes);
# recorded in every checkpoint's metadata and shown in the report.
DEVIATIONS = {
    "all": [
        "Tiny scale: D 128, 4 blocks, 4 heads (paper Base: D 768, 12 blocks) and a few "
        "thousand updates on one CPU instead of 400k-1M on GPUs.",
        "Pre-LN transformer blocks for every modality (paper speech/text use post-LN).",
        "EMA schedule shortened for short runs (spec §2 rec.): see the tau values in config.",
    ],
    "image": [
        "MNIST 28x28 grey digits with 7x7 patches (16 tokens) and learned absolute positions "
        "instead of ImageNet 224x224, 16x16 patches, BEiT relative positions.",
        "Block masks with a minimum block of 4 patches (BEiT: 16 of 196).",
    ],
    "speech": [
        "Synthesised 1 s keyword clips instead of LibriSpeech; conv feature encoder with "
        "64 channels (paper 512); keyword classification instead of CTC/WER.",
    ],
    "text": [
        "Byte-level BPE with a 4k vocabulary and 64-token sequences (paper: 50k BPE, 512 "
        "tokens); sentiment classification on Rotten Tomatoes instead of GLUE.",
    ],
    # data2vec 2.0 only (spec §5)
    ("data2vec2", "all"): [
        "data2vec 2.0: fewer clones per sample (paper 8-16) and a shallower convolutional "
        "decoder of width D (paper 4-6 layers; see clones and decoder in config); the "
        "modality's shared learning rate (the same for every method), smaller batches, "
        "budget matched to data2vec v1 in wall time.",
    ],
    ("data2vec2", "image"): [
        "data2vec 2.0 images: no prenet blocks; learned positions (paper: fixed sin-cos); "
        "inverse block masks of 2x2 blocks on the 4x4 grid (paper 3x3 on 14x14).",
    ],
    ("data2vec2", "speech"): [
        "data2vec 2.0 speech: no ALiBi; every row's mask brought to the batch mean masked "
        "count (fairseq trims to the minimum); decoder 2 layers, kernel 7 (paper 4 x 7).",
    ],
    ("data2vec2", "text"): [
        "data2vec 2.0 text: special tokens are never masked; targets instance-normalised "
        "over real tokens only (padding excluded).",
    ],
}


def deviations(method: str, modality: str) -> list[str]:
    """Where a ``method`` run on ``modality`` departs from the paper (DEVIATIONS)."""
    out = DEVIATIONS["all"] + DEVIATIONS.get(modality, [])
    return out + DEVIATIONS.get((method, "all"), []) + DEVIATIONS.get((method, modality), [])


def _given(modality: str, name: str, values: Any) -> dict[str, Any]:
    """``<m>.pretrain.<name>`` validated by its schema block (errors name the full key path):
    the keys that were set, for the library to complete with its defaults."""
    schema = _SCHEMA[modality].model_fields[name].annotation
    where = f"{modality}.pretrain.{name}"
    block = validated(schema, values, where, PARAMS_FILE, cfgs.ConfigError)
    return block.model_dump(exclude_unset=True)


def _configs(
    method: str, dataset_info: Mapping[str, Any], params: Mapping[str, Any]
) -> tuple[Any, Any, cfgs.TrainConfig]:
    """(encoder, method, train) configs of ``method``. A method block may hold a ``train``
    block whose keys override the modality's shared ``train`` for that method only (data2vec2
    trains small batches of many clones; its budget is matched in wall time, not steps).
    Only the blocks ``method`` uses are read (``scratch``: encoder and train)."""
    modality = dataset_info["modality"]
    method_block = {} if method == "scratch" else _given(modality, method, params.get(method))
    train = _given(modality, "train", params.get("train")) | method_block.pop("train", {})
    enc = encoder_config(dataset_info, _given(modality, "encoder", params.get("encoder")))
    method_cfg = None
    if method != "scratch":
        method_cfg = cfgs.method_config_from_dict(method, modality, method_block)
    return enc, method_cfg, cfgs.train_config_from_dict(train)


def rebuild_command(modality: str) -> str:
    """The command that writes a modality's encoders again (from the finished training state,
    so in seconds): the remedy every damaged-encoder error names."""
    return f"kedro run --namespaces {modality} --pipelines pretrain"


def _encoder_output(
    state: Mapping[str, torch.Tensor], meta: dict[str, Any], enc_cfg: Any
) -> EncoderWeights:
    """The encoder weights with a self-describing header; ``meta`` gets their content hash.

    The tensors are not touched (only described): ``content_sha256`` is
    :func:`~d2v_pipeline.io.tensors_sha256`, the value the saved file's header records.
    """
    modality, method = meta["modality"], meta["method"]
    header = encoder_header(
        modality, method, cfgs.config_to_dict(enc_cfg), rebuild_command(modality)
    )
    meta["content_sha256"] = tensors_sha256(state)
    meta["encoder_file"] = {k: v for k, v in header.items() if k != "encoder_config"}
    return EncoderWeights(state, header)


def run_key(*parts: Any) -> str:
    """Short hash of configs + data: a training state is only resumed by the same run."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return sha256_bytes(blob)[:16]


def _state_dir(params: Mapping[str, Any], modality: str, method: str) -> Path | None:
    """``<state_dir>/<method>``: the method's resumable training states (one per run key)."""
    root = params.get("state_dir")
    if not root:
        log.warning(
            "%s.pretrain.state_dir is not set: %s trains without resumable checkpoints",
            modality,
            method,
        )
        return None
    return Path(str(root)) / method


def pretrain_encoder(
    model_input: dict[str, torch.Tensor],
    dataset_info: dict[str, Any],
    params: dict[str, Any],
    method: str,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], pd.DataFrame]:
    """Pretrain one encoder with ``method`` on the train split (never val/test).

    Args:
        model_input: ingested tensors (``train.x`` ...).
        dataset_info: shapes, vocabulary and content hash from ingest.
        params: ``<m>.pretrain`` (encoder, train, and one block per method); ``state_dir`` is
            the folder for resumable checkpoints (``<state_dir>/<method>/<run key>``): a run
            killed mid-way continues from its last checkpoint.
        method: ``data2vec``, ``data2vec2`` or ``masked_recon``.

    Returns:
        Student encoder weights (with the header that describes them: modality, method,
        encoder config), metadata (config, seed, data hash, the weights' ``content_sha256``,
        versions, collapse flag, deviations) and the training history table.
    """
    modality = dataset_info["modality"]
    enc_cfg, method_cfg, train_cfg = _configs(method, dataset_info, params)
    data = pretraining_data(model_input)
    key = run_key(
        method,
        cfgs.config_to_dict(enc_cfg),
        cfgs.config_to_dict(method_cfg),
        cfgs.config_to_dict(train_cfg),
        dataset_info.get("content_hash"),
    )
    method_dir = _state_dir(params, modality, method)
    state_dir = method_dir / key if method_dir is not None else None
    log.info(
        "%s/%s: pretraining %d steps on %d unlabelled examples (state: %s)",
        modality,
        method,
        train_cfg.steps,
        len(data["x"]),
        state_dir,
    )
    model = build_pretrain_model(method, enc_cfg, method_cfg, seed=train_cfg.seed)
    result = pretrain(
        model,
        data,
        train_cfg,
        checkpoint_dir=state_dir,
        resume=bool(params.get("resume", True)),
        progress=bool(params.get("progress", True)),
    )
    for other in method_dir.iterdir() if method_dir is not None else ():
        if other.is_dir() and other.name != key:  # states of superseded configs
            shutil.rmtree(other, ignore_errors=True)
    history = pd.DataFrame(result.history)
    last = result.history[-1] if result.history else {}
    if result.collapsed:
        log.warning(
            "%s/%s: representation collapse detected at step %s (target std %s, pred std %s)",
            modality,
            method,
            result.collapse_step,
            last.get("target_std"),
            last.get("pred_std"),
        )
    meta = {
        "method": method,
        "modality": modality,
        "steps": train_cfg.steps,
        "seed": train_cfg.seed,
        "wall_time_s": result.wall_time_s,
        "collapsed": bool(result.collapsed),
        "collapse_step": result.collapse_step,
        "final_loss": last.get("loss"),
        "final_target_std": last.get("target_std"),
        "final_pred_std": last.get("pred_std"),
        "data_hash": dataset_info.get("content_hash"),
        "run_key": key,
        "config": {
            "encoder": cfgs.config_to_dict(enc_cfg),
            "method": cfgs.config_to_dict(method_cfg),
            "train": cfgs.config_to_dict(train_cfg),
        },
        "environment": environment(),
        "deviations": deviations(method, modality),
    }
    return _encoder_output(result.encoder_state, meta, enc_cfg), meta, history


def init_scratch_encoder(
    dataset_info: dict[str, Any], params: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The ``scratch`` baseline: the same encoder at its random initialisation (no pretraining)."""
    enc_cfg, _, train_cfg = _configs("scratch", dataset_info, params)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_cfg.seed)
        encoder = build_encoder(enc_cfg)
    meta = {
        "method": "scratch",
        "modality": dataset_info["modality"],
        "steps": 0,
        "seed": train_cfg.seed,
        "wall_time_s": 0.0,
        "collapsed": False,
        "collapse_step": None,
        "data_hash": dataset_info.get("content_hash"),
        "config": {"encoder": cfgs.config_to_dict(enc_cfg)},
        "environment": environment(),
        "deviations": [],
    }
    state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    return _encoder_output(state, meta, enc_cfg), meta
