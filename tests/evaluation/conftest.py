"""Fixtures for the evaluation tests: small real data (sklearn digits) and tiny real encoders
from ``d2v_pipeline.data2vec``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from d2v_pipeline.data2vec import (
    ImageEncoderConfig,
    SpeechEncoderConfig,
    TextEncoderConfig,
    build_encoder,
)

TINY = {"dim": 32, "depth": 2, "heads": 2, "ffn_dim": 64}
TEXT_VOCAB, TEXT_PAD, TEXT_MASK, TEXT_LEN = 40, 0, 1, 16


def tiny_encoder(modality: str, seed: int = 0, **overrides) -> nn.Module:
    """A real encoder at tiny size: image 8x8 (patch 2 -> 16 tokens + CLS), speech 0.25 s
    (small conv stack), text vocab 40 / length 16."""
    torch.manual_seed(seed)
    if modality == "image":
        cfg = ImageEncoderConfig(**{**TINY, "image_size": 8, "patch_size": 2, **overrides})
    elif modality == "speech":
        cfg = SpeechEncoderConfig(
            **{
                **TINY,
                "sample_len": 4000,
                "conv_channels": 16,
                "pos_conv_depth": 1,
                "pos_conv_groups": 4,
                **overrides,
            }
        )
    else:
        cfg = TextEncoderConfig(
            **{
                **TINY,
                "vocab_size": TEXT_VOCAB,
                "pad_id": TEXT_PAD,
                "mask_id": TEXT_MASK,
                "seq_len": TEXT_LEN,
                **overrides,
            }
        )
    return build_encoder(cfg)


@pytest.fixture
def make_encoder():
    return tiny_encoder


@pytest.fixture(scope="session")
def digits() -> dict[str, np.ndarray]:
    """sklearn digits (1,797 8x8 images, 10 classes) split 1000/400/397 and standardised with
    train statistics, as (N, 1, 8, 8) float32."""
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    x = d.images[order].astype(np.float32)[:, None]
    y = d.target[order].astype(np.int64)
    x = (x - x[:1000].mean()) / x[:1000].std()
    return {
        "train.x": x[:1000],
        "train.y": y[:1000],
        "val.x": x[1000:1400],
        "val.y": y[1000:1400],
        "test.x": x[1400:],
        "test.y": y[1400:],
    }
