"""Configuration of the data2vec library: the from-dict builders by modality and method.

The base dataclasses and the validation machinery are in :mod:`.config_base`; each modality's
subclasses, whose defaults are the tiny recommendations of spec §4 (MNIST 28×28 patch 7, 1 s
of 16 kHz speech, 64-token text; D 128, depth 4, 4 heads, FFN 512) with the per-modality
masking, targets, τ and loss of spec §1-§3, are in its file under :mod:`.modalities`. This
module picks them by name through the registry and re-exports every class, so
``config.ImageEncoderConfig`` etc. keep working. Every builder rejects unknown keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config_base import (
    ConfigError,
    Data2Vec2Config,
    Data2VecConfig,
    DecoderConfig,
    EncoderConfig,
    MaskConfig,
    ReconConfig,
    Tap,
    TargetNorm,
    TrainConfig,
    config_to_dict,
    from_dict,
    train_config_from_dict,
)
from .modalities import MODALITIES, get_modality
from .modalities.image import (
    ImageData2Vec2Config,
    ImageData2VecConfig,
    ImageDecoderConfig,
    ImageEncoderConfig,
    ImageMask2Config,
    ImageMaskConfig,
    ImageReconConfig,
)
from .modalities.speech import (
    SpeechData2Vec2Config,
    SpeechData2VecConfig,
    SpeechDecoderConfig,
    SpeechEncoderConfig,
    SpeechMask2Config,
    SpeechMaskConfig,
    SpeechReconConfig,
)
from .modalities.text import (
    TextData2Vec2Config,
    TextData2VecConfig,
    TextDecoderConfig,
    TextEncoderConfig,
    TextMask2Config,
    TextMaskConfig,
    TextReconConfig,
)

METHODS = ("data2vec", "data2vec2", "masked_recon")

MethodConfig = Data2VecConfig | Data2Vec2Config | ReconConfig


def encoder_config_from_dict(modality: str, data: Mapping[str, Any] | None) -> EncoderConfig:
    """EncoderConfig of ``modality`` from a params dict (unknown keys rejected)."""
    return from_dict(get_modality(modality).encoder_config, data, f"{modality}.encoder")


def mask_config_from_dict(modality: str, data: Mapping[str, Any] | None) -> MaskConfig:
    return from_dict(get_modality(modality).mask_config, data, f"{modality}.mask")


def data2vec_config_from_dict(modality: str, data: Mapping[str, Any] | None) -> Data2VecConfig:
    m = get_modality(modality)
    return from_dict(m.data2vec_config, data, f"{modality}.data2vec", mask=m.mask_config)


def data2vec2_config_from_dict(modality: str, data: Mapping[str, Any] | None) -> Data2Vec2Config:
    """data2vec 2.0 config of ``modality`` (nested ``mask``/``decoder``; unknown keys rejected)."""
    m = get_modality(modality)
    return from_dict(
        m.data2vec2_config,
        data,
        f"{modality}.data2vec2",
        mask=m.mask2_config,
        decoder=m.decoder_config,
    )


def recon_config_from_dict(modality: str, data: Mapping[str, Any] | None) -> ReconConfig:
    m = get_modality(modality)
    return from_dict(m.recon_config, data, f"{modality}.masked_recon", mask=m.mask_config)


def method_config_from_dict(
    method: str, modality: str, data: Mapping[str, Any] | None
) -> MethodConfig:
    """Config of a pretraining ``method`` ("data2vec", "data2vec2" or "masked_recon")."""
    if method == "data2vec":
        return data2vec_config_from_dict(modality, data)
    if method == "data2vec2":
        return data2vec2_config_from_dict(modality, data)
    if method == "masked_recon":
        return recon_config_from_dict(modality, data)
    raise ConfigError(f"unknown pretraining method {method!r}; expected one of {METHODS}")


def default_method_config(method: str, modality: str) -> MethodConfig:
    """The spec defaults of ``method`` for ``modality``."""
    return method_config_from_dict(method, modality, {})


__all__ = [
    "METHODS",
    "MODALITIES",
    "ConfigError",
    "Data2Vec2Config",
    "Data2VecConfig",
    "DecoderConfig",
    "EncoderConfig",
    "ImageData2Vec2Config",
    "ImageData2VecConfig",
    "ImageDecoderConfig",
    "ImageEncoderConfig",
    "ImageMask2Config",
    "ImageMaskConfig",
    "ImageReconConfig",
    "MaskConfig",
    "MethodConfig",
    "ReconConfig",
    "SpeechData2Vec2Config",
    "SpeechData2VecConfig",
    "SpeechDecoderConfig",
    "SpeechEncoderConfig",
    "SpeechMask2Config",
    "SpeechMaskConfig",
    "SpeechReconConfig",
    "Tap",
    "TargetNorm",
    "TextData2Vec2Config",
    "TextData2VecConfig",
    "TextDecoderConfig",
    "TextEncoderConfig",
    "TextMask2Config",
    "TextMaskConfig",
    "TextReconConfig",
    "TrainConfig",
    "config_to_dict",
    "data2vec2_config_from_dict",
    "data2vec_config_from_dict",
    "default_method_config",
    "encoder_config_from_dict",
    "mask_config_from_dict",
    "method_config_from_dict",
    "recon_config_from_dict",
    "train_config_from_dict",
]
