"""Pretraining cases the distributed tests run in worker processes.

``runtime.launch`` starts workers with multiprocessing spawn: the function and its arguments
are pickled, so everything a worker runs is a module-level function of this module (found on
the ``sys.path`` the spawned processes inherit) and every model and batch is rebuilt from a
case name and seeds, identically in every process.
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from d2v_pipeline.data2vec import (
    ImageEncoderConfig,
    Runtime,
    SpeechEncoderConfig,
    TextEncoderConfig,
    TrainConfig,
    build_pretrain_model,
    dist_info,
    method_config_from_dict,
    pretrain,
)

TINY = {"dim": 32, "depth": 2, "heads": 2, "ffn_dim": 64}
NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "layerdrop": 0.0}
SPEECH_LEN, TEXT_VOCAB, TEXT_LEN = 4000, 40, 16
RUNTIME = Runtime(threads=1)  # one thread per process, in every test process alike

# case -> (method, modality); text and speech have per-row mask counts (attention masks,
# spans), data2vec2 text also per-row visible counts (padded gathers), images the CLS term
CASES = {
    "data2vec-text": ("data2vec", "text"),
    "data2vec2-image": ("data2vec2", "image"),
    "data2vec2-text": ("data2vec2", "text"),
    "masked_recon-speech": ("masked_recon", "speech"),
}


def encoder_cfg(modality: str) -> Any:
    """Tiny encoders (dim 32, depth 2) without dropout: 8×8 images, 0.25 s speech, 16 tokens."""
    if modality == "image":
        return ImageEncoderConfig(image_size=8, patch_size=2, **TINY, **NO_DROPOUT)
    if modality == "speech":
        return SpeechEncoderConfig(
            sample_len=SPEECH_LEN,
            conv_channels=16,
            pos_conv_depth=1,
            pos_conv_kernel=5,
            pos_conv_groups=4,
            **TINY,
            **NO_DROPOUT,
        )
    return TextEncoderConfig(
        vocab_size=TEXT_VOCAB, pad_id=0, mask_id=1, cls_id=2, seq_len=TEXT_LEN, **TINY, **NO_DROPOUT
    )


def method_cfg(method: str, modality: str) -> Any:
    """Spec defaults, except top_k within the tiny depth, speech spans of 3 (11 frames) and a
    decoder without input dropout (the cases compare world sizes, which dropout would not)."""
    data: dict[str, Any] = {}
    if modality == "speech":
        data["mask"] = {"mask_prob": 0.65, "mask_length": 3}
    if method == "data2vec":
        data["top_k"] = 2
    if method == "data2vec2":
        data.update(top_k=None, decoder={"input_dropout": 0.0})  # top_k None = every block
    return method_config_from_dict(method, modality, data)


def dataset(modality: str, n: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic unlabelled data; text rows have 8-16 real tokens (attention masks)."""
    g = torch.Generator().manual_seed(seed)
    if modality == "image":
        return {"x": torch.randn(n, 1, 8, 8, generator=g)}
    if modality == "speech":
        t = torch.arange(SPEECH_LEN) / 16000.0
        f = 200.0 + 600.0 * torch.rand(n, 1, generator=g)
        x = torch.sin(2 * math.pi * f * t) + 0.1 * torch.randn(n, SPEECH_LEN, generator=g)
        return {"x": x}
    ids = torch.randint(3, TEXT_VOCAB, (n, TEXT_LEN), generator=g)
    ids[:, 0] = 2
    lengths = torch.randint(TEXT_LEN // 2, TEXT_LEN + 1, (n,), generator=g)
    am = torch.arange(TEXT_LEN)[None] < lengths[:, None]
    return {"x": ids.masked_fill(~am, 0), "attention_mask": am}


def train_cfg(**overrides: Any) -> TrainConfig:
    base = {
        "steps": 4,
        "batch_size": 8,
        "lr": 3e-3,
        "warmup_frac": 0.25,
        "seed": 5,
        "log_every": 2,
        "checkpoint_every": 0,
        "collapse_grace_steps": 1000,
    }
    return TrainConfig(**{**base, **overrides})


def state_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 over name, dtype, shape and raw bytes of every tensor, in key order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class KillAt:
    """Pretraining callback: rank ``rank`` SIGKILLs itself at logged step ``step`` (a crash no
    Python code can react to, like the OOM killer or a lost machine)."""

    def __init__(self, rank: int, step: int) -> None:
        self.rank, self.step = rank, step

    def __call__(self, step: int, model: Any) -> bool:
        if step == self.step and dist_info().rank == self.rank:
            os.kill(os.getpid(), signal.SIGKILL)
        return False


def run_case(
    case: str,
    checkpoint_dir: str | None = None,
    callback: Any = None,
    runtime: Runtime = RUNTIME,
    **cfg: Any,
) -> dict[str, Any]:
    """Pretrain one case from scratch (or resume from ``checkpoint_dir``); the final state,
    the loss history and, under a process group, every rank's hashes of its weights."""
    method, modality = CASES[case]
    model = build_pretrain_model(method, encoder_cfg(modality), method_cfg(method, modality), 11)
    result = pretrain(
        model,
        dataset(modality),
        train_cfg(**cfg),
        checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir),
        progress=False,
        callback=callback,
        runtime=runtime,
    )
    state = result.model_state
    teacher = {k: v for k, v in state.items() if k.startswith("teacher.")}
    hashes = {"teacher": state_hash(teacher), "model": state_hash(state)}
    if dist.is_initialized():  # every rank's hashes, to compare across ranks
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, hashes)
        hashes = {k: [h[k] for h in gathered] for k in hashes}
    return {
        "state": state,
        "losses": [row["loss"] for row in result.history],
        "hashes": hashes,
        "resumed_from_step": result.resumed_from_step,
        "steps": result.steps,
        "world_size": result.info["world_size"],
        "teacher_dtypes": sorted({str(v.dtype) for v in teacher.values()}),
        "teacher_tensors": len(teacher),
    }


def run_cases(cases: list[str], **cfg: Any) -> dict[str, dict[str, Any]]:
    """Several cases in one launch (process start-up dominates a tiny run's time)."""
    return {case: run_case(case, **cfg) for case in cases}
