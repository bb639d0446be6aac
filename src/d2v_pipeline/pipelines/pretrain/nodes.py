"""Pretraining nodes: parameters + ingested data -> library calls -> weights, metadata, history.

Every method of a modality uses the same encoder config, data and training budget
(``<m>.pretrain.encoder`` and ``<m>.pretrain.train``), so the comparison is fair;
only the method block (``<m>.pretrain.data2vec`` / ``masked_recon``) differs.

Where the training runs is ``<m>.runtime`` (device, precision, processes). One run is
:func:`plan_pretraining` (configs, run key, state folder) -> :func:`train_planned` (the
library call, through :func:`~d2v_pipeline.data2vec.runtime.launch`: in this process, or on
``nproc_per_node`` data-parallel workers, or on every rank of a ``torchrun`` job) ->
:func:`pretrain_outputs` (encoder file, metadata, history). The Kedro node and the
``python -m d2v_pipeline.train`` command line both go through these three steps, so they
train the same thing into the same resumable state and write the same artefacts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from d2v_pipeline.data2vec import config as cfgs
from d2v_pipeline.data2vec.encoders import build_encoder
from d2v_pipeline.data2vec.models import build_pretrain_model
from d2v_pipeline.data2vec.runtime import Runtime, launch
from d2v_pipeline.data2vec.train import PretrainResult, pretrain
from d2v_pipeline.experiment import encoder_config, environment, pretraining_data
from d2v_pipeline.io import EncoderWeights, encoder_header, sha256_bytes, tensors_sha256
from d2v_pipeline.schema.check import validated
from d2v_pipeline.schema.pretrain import ImagePretrain, SpeechPretrain, TextPretrain
from d2v_pipeline.schema.runtime import runtime_of

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


@dataclass(frozen=True)
class PretrainPlan:
    """One pretraining run, decided from the parameters and the data before any training:
    what the node and the command line share (same plan = same run key = same state folder).

    Attributes:
        state_dir: ``<state_dir>/<method>/<run key>`` (None: no resumable checkpoints).
        method_dir: ``<state_dir>/<method>``, where superseded run keys are cleared.
    """

    modality: str
    method: str
    encoder: Any  # the modality's EncoderConfig
    method_config: Any  # the method's config (None for scratch)
    train: cfgs.TrainConfig
    runtime: Runtime
    run_key: str
    state_dir: Path | None
    method_dir: Path | None
    resume: bool
    progress: bool


def plan_pretraining(
    method: str,
    dataset_info: Mapping[str, Any],
    params: Mapping[str, Any],
    runtime: Mapping[str, Any] | None,
) -> PretrainPlan:
    """The plan of ``method``'s run from ``<m>.pretrain`` (``params``) and ``<m>.runtime``.

    The run key hashes what the run learns: the configs, the data and the precision (bf16 /
    fp16 weights are other weights). Device, process count, threads and compile are left
    out: they change how the sums are rounded (and, with several processes, which dropout
    mask a sample draws), as another machine would, so a finished state is reused whichever
    of them trained it: a ``torchrun`` job's state serves the later ``kedro run``.
    """
    modality = dataset_info["modality"]
    rt = runtime_of(runtime, modality)
    enc_cfg, method_cfg, train_cfg = _configs(method, dataset_info, params)
    key = run_key(
        method,
        cfgs.config_to_dict(enc_cfg),
        cfgs.config_to_dict(method_cfg),
        cfgs.config_to_dict(train_cfg),
        dataset_info.get("content_hash"),
        {"precision": rt.precision},
    )
    method_dir = _state_dir(params, modality, method)
    return PretrainPlan(
        modality=modality,
        method=method,
        encoder=enc_cfg,
        method_config=method_cfg,
        train=train_cfg,
        runtime=rt,
        run_key=key,
        state_dir=method_dir / key if method_dir is not None else None,
        method_dir=method_dir,
        resume=bool(params.get("resume", True)),
        progress=bool(params.get("progress", True)),
    )


def train_planned(plan: PretrainPlan, data: dict[str, torch.Tensor]) -> PretrainResult:
    """Build the model and pretrain it as ``plan`` says, in this process: the function
    :func:`~d2v_pipeline.data2vec.runtime.launch` runs on every data-parallel worker (so it
    lives at module level: the workers unpickle it by name)."""
    model = build_pretrain_model(
        plan.method, plan.encoder, plan.method_config, seed=plan.train.seed
    )
    return pretrain(
        model,
        data,
        plan.train,
        checkpoint_dir=plan.state_dir,
        resume=plan.resume,
        progress=plan.progress,
        runtime=plan.runtime,
    )


def run_pretraining(plan: PretrainPlan, data: dict[str, torch.Tensor]) -> PretrainResult | None:
    """:func:`train_planned` on ``plan.runtime``: in this process (one process), on
    ``nproc_per_node`` workers started by torch's elastic launcher, or on this rank of a
    ``torchrun`` job. Returns rank 0's result (None on the other ranks of a torchrun job)."""
    log.info(
        "%s/%s: pretraining %d steps on %d unlabelled examples (state: %s; runtime: %s)",
        plan.modality,
        plan.method,
        plan.train.steps,
        len(data["x"]),
        plan.state_dir,
        _runtime_text(plan.runtime),
    )
    return launch(train_planned, plan.runtime, plan, data)


def _runtime_text(rt: Runtime) -> str:
    """``cpu, fp32, 1 process``; under torchrun the world size is torchrun's."""
    if "WORLD_SIZE" in os.environ:
        procs = f"{os.environ['WORLD_SIZE']} processes (torchrun)"
    else:
        procs = f"{rt.nproc_per_node} processes" if rt.nproc_per_node > 1 else "1 process"
    compiled = ", compiled" if rt.compile else ""
    return f"{rt.device}, {rt.precision}, {procs}{compiled}"


def pretrain_outputs(
    plan: PretrainPlan, result: PretrainResult, dataset_info: Mapping[str, Any]
) -> tuple[EncoderWeights, dict[str, Any], pd.DataFrame]:
    """The node's outputs from rank 0's result: encoder weights (with their header),
    metadata and the history table; training states of superseded configs are removed."""
    modality, method, train_cfg = plan.modality, plan.method, plan.train
    for other in plan.method_dir.iterdir() if plan.method_dir is not None else ():
        if other.is_dir() and other.name != plan.run_key:  # states of superseded configs
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
        "run_key": plan.run_key,
        "resumed_from_step": result.resumed_from_step,
        "device": result.info.get("device"),  # where this call ran (resolved, e.g. cuda:0)
        "world_size": result.info.get("world_size", 1),
        "skipped_steps": result.info.get("skipped_steps", 0),  # fp16 overflows, retried
        "config": {
            "encoder": cfgs.config_to_dict(plan.encoder),
            "method": cfgs.config_to_dict(plan.method_config),
            "train": cfgs.config_to_dict(train_cfg),
            "runtime": dataclasses.asdict(plan.runtime),
        },
        "environment": environment(),
        "deviations": deviations(method, modality),
    }
    encoder = _encoder_output(result.encoder_state, meta, plan.encoder)
    return encoder, meta, history


def pretrain_encoder(
    model_input: dict[str, torch.Tensor],
    dataset_info: dict[str, Any],
    params: dict[str, Any],
    runtime: dict[str, Any],
    method: str,
) -> tuple[EncoderWeights, dict[str, Any], pd.DataFrame]:
    """Pretrain one encoder with ``method`` on the train split (never val/test).

    Args:
        model_input: ingested tensors (``train.x`` ...).
        dataset_info: shapes, vocabulary and content hash from ingest.
        params: ``<m>.pretrain`` (encoder, train, and one block per method); ``state_dir`` is
            the folder for resumable checkpoints (``<state_dir>/<method>/<run key>``): a run
            killed mid-way continues from its last checkpoint, a finished one (e.g. written
            by ``python -m d2v_pipeline.train`` under torchrun) is reused as it is.
        runtime: ``<m>.runtime``: device, precision, compile, processes (``nproc_per_node``
            > 1 trains on that many data-parallel workers; rank 0's result is returned).
        method: ``data2vec``, ``data2vec2`` or ``masked_recon``.

    Returns:
        Student encoder weights (with the header that describes them: modality, method,
        encoder config), metadata (config, seed, data hash, the weights' ``content_sha256``,
        versions, collapse flag, deviations) and the training history table.
    """
    plan = plan_pretraining(method, dataset_info, params, runtime)
    result = run_pretraining(plan, pretraining_data(model_input))
    return pretrain_outputs(plan, result, dataset_info)


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
