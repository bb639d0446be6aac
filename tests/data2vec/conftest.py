"""Tiny configs and small real batches for the data2vec library tests."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from sklearn.datasets import load_digits

from d2v_pipeline.data2vec import (
    Data2VecConfig,
    EncoderConfig,
    ImageEncoderConfig,
    ReconConfig,
    SpeechEncoderConfig,
    SpeechMaskConfig,
    TextEncoderConfig,
    config_to_dict,
    method_config_from_dict,
)

TINY = {"dim": 32, "depth": 2, "heads": 2, "ffn_dim": 64}
NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "layerdrop": 0.0}
SPEECH_LEN = 4000  # 0.25 s -> 11 frames with the spec conv stack
TEXT_VOCAB, TEXT_LEN = 40, 16
TINY_SPEECH_MASK = SpeechMaskConfig(mask_prob=0.65, mask_length=3)


def tiny_encoder_cfg(modality: str, **overrides: object) -> EncoderConfig:
    """Small encoders: image 8×8 digits with patch 2 (16 tokens), 0.25 s speech, 16 tokens."""
    if modality == "image":
        return ImageEncoderConfig(image_size=8, in_channels=1, patch_size=2, **TINY, **overrides)
    if modality == "speech":
        kw = {**TINY, **NO_DROPOUT, **overrides}
        return SpeechEncoderConfig(
            sample_len=SPEECH_LEN,
            conv_channels=16,
            pos_conv_depth=1,
            pos_conv_kernel=5,
            pos_conv_groups=4,
            **kw,
        )
    kw = {**TINY, **NO_DROPOUT, **overrides}
    return TextEncoderConfig(
        vocab_size=TEXT_VOCAB, pad_id=0, mask_id=1, cls_id=2, seq_len=TEXT_LEN, **kw
    )


def tiny_method_cfg(
    method: str, modality: str, **overrides: object
) -> Data2VecConfig | ReconConfig:
    """Spec defaults, except top_k <= the tiny depth and speech spans of 3 (11 frames)."""
    data: dict[str, object] = {}
    if modality == "speech":
        data["mask"] = config_to_dict(TINY_SPEECH_MASK)
    if method == "data2vec":
        data["top_k"] = 2
    return method_config_from_dict(method, modality, {**data, **overrides})


def real_batch(modality: str, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Real digits for images; deterministic structured tones and token streams otherwise."""
    g = torch.Generator().manual_seed(seed)
    if modality == "image":
        digits = load_digits()
        x = torch.tensor(digits.images[:n], dtype=torch.float32).unsqueeze(1)
        return {"x": (x - x.mean()) / x.std()}
    if modality == "speech":
        t = torch.arange(SPEECH_LEN) / 16000.0
        f = 200.0 + 600.0 * torch.rand(n, 2, generator=g)
        x = torch.sin(2 * math.pi * f[:, :1] * t) + 0.5 * torch.sin(2 * math.pi * f[:, 1:] * t)
        x = x + 0.05 * torch.randn(n, SPEECH_LEN, generator=g)
        return {"x": (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)}
    # text: CLS + arithmetic token streams (id_{i+1} = id_i + step mod range) + padding
    start = torch.randint(3, TEXT_VOCAB, (n, 1), generator=g)
    step = torch.randint(1, 4, (n, 1), generator=g)
    ids = 3 + (start - 3 + step * torch.arange(TEXT_LEN)) % (TEXT_VOCAB - 3)
    ids[:, 0] = 2
    lengths = torch.randint(TEXT_LEN // 2, TEXT_LEN + 1, (n,), generator=g)
    am = torch.arange(TEXT_LEN)[None] < lengths[:, None]
    return {"x": ids.masked_fill(~am, 0), "attention_mask": am}


@pytest.fixture
def encoder_cfg() -> Callable[..., EncoderConfig]:
    return tiny_encoder_cfg


@pytest.fixture
def method_cfg() -> Callable[..., Data2VecConfig | ReconConfig]:
    return tiny_method_cfg


@pytest.fixture
def batch() -> Callable[..., dict[str, torch.Tensor]]:
    return real_batch
