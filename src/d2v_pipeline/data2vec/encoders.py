"""Build and load encoders by modality.

The Encoder contract is in :mod:`.encoder_base`; each modality's encoder is in its file under
:mod:`.modalities` (re-exported here, so ``encoders.ImageEncoder`` etc. keep working).
"""

from __future__ import annotations

from torch import Tensor

from .config import encoder_config_from_dict
from .config_base import EncoderConfig
from .encoder_base import Encoder, EncoderOutput
from .modalities import get_modality
from .modalities.image import ImageEncoder
from .modalities.speech import SpeechEncoder
from .modalities.text import TextEncoder


def build_encoder(cfg: EncoderConfig) -> Encoder:
    """The encoder for ``cfg``'s modality."""
    return get_modality(cfg.modality).build_encoder(cfg)


def load_encoder(
    encoder_cfg: EncoderConfig | dict, state_dict: dict[str, Tensor], modality: str | None = None
) -> Encoder:
    """Build an encoder and load weights (e.g. ``PretrainResult.encoder_state``), strictly.

    ``encoder_cfg`` may be a dict, then ``modality`` is required.
    """
    if isinstance(encoder_cfg, dict):
        if modality is None:
            raise ValueError("load_encoder: modality is required when encoder_cfg is a dict")
        encoder_cfg = encoder_config_from_dict(modality, encoder_cfg)
    encoder = build_encoder(encoder_cfg)
    missing, unexpected = encoder.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise KeyError(
            f"{encoder_cfg.modality} encoder state mismatch: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return encoder


__all__ = [
    "Encoder",
    "EncoderOutput",
    "ImageEncoder",
    "SpeechEncoder",
    "TextEncoder",
    "build_encoder",
    "load_encoder",
]
