"""The Encoder contract every modality front-end follows, on the shared transformer.

Each encoder splits its forward so that data2vec can share or copy parts (spec §2):
``embed(x)`` gives the local features before masking (patch embedding, conv features, token
embedding) and ``contextualize(feat, ...)`` applies the mask, positions and the transformer.
``contextualize`` is itself ``embed_positions`` (positions, per-modality norm and dropout) then
``encode_tokens`` (CLS + transformer), which data2vec 2.0 calls on a gathered subset of visible
tokens (spec §5 item 3). The concrete encoders live in their modality files
(:mod:`.modalities`); which parts the EMA teacher copies or shares is the modality's policy
(:class:`~.modalities.base.Modality`), not the encoder's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config_base import EncoderConfig
from .transformer import Transformer


@dataclass
class EncoderOutput:
    tokens: Tensor  # (B, T, D) after the final LayerNorm; CLS excluded
    layers: list[Tensor] | None  # per-block taps (B, T, D), len == depth, CLS excluded
    padding_mask: Tensor | None  # (B, T) True = padding
    cls: Tensor | None  # (B, D) if the encoder has a CLS token


class Encoder(nn.Module):
    """Base class: front-end (``embed``) + positions + transformer (``contextualize``).

    ``tap`` ("ffn" or "block") selects what ``return_layers`` yields; data2vec sets it on the
    teacher. A subclass builds its front-end after this constructor has built the transformer
    (parameter initialisation draws from the global RNG in construction order).
    """

    modality: str = ""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.dim, self.depth = cfg.dim, cfg.depth
        self.tap = "block"
        self.transformer = Transformer(cfg)

    def embed(
        self, x: Tensor, attention_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Local features (B, T, D) before masking, and the padding mask (B, T) or None."""
        raise NotImplementedError

    def mask_embedding(self) -> Tensor:
        """(D,) vector that replaces masked features in v1 (spec §3)."""
        raise NotImplementedError

    def contextualize(
        self,
        feat: Tensor,
        padding_mask: Tensor | None = None,
        mask: Tensor | None = None,
        return_layers: bool = False,
    ) -> EncoderOutput:
        """Masked features -> positions -> transformer. Spec §3: masked positions are replaced
        by the mask embedding before positions are added."""
        if mask is not None and mask.shape != feat.shape[:2]:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} != token grid {tuple(feat.shape[:2])}"
            )
        if mask is not None:
            feat = torch.where(mask.unsqueeze(-1), self.mask_embedding().to(feat.dtype), feat)
        return self.encode_tokens(self.embed_positions(feat), padding_mask, return_layers)

    def embed_positions(self, feat: Tensor) -> Tensor:
        """(B, T, D) transformer input: local features + positions (+ norm and dropout).

        Position i's output depends on position i's features only, except for speech, whose
        conv positions mix neighbouring frames (data2vec 2.0 zeroes masked frames first)."""
        raise NotImplementedError

    def encode_tokens(
        self, h: Tensor, padding_mask: Tensor | None = None, return_layers: bool = False
    ) -> EncoderOutput:
        """Run the transformer on any (B, T', D) set of positioned tokens (images prepend
        CLS); ``padding_mask`` (B, T') True = padding."""
        out, layers = self.transformer(h, padding_mask, return_layers, self.tap)
        return EncoderOutput(out, layers, padding_mask, None)

    def forward(
        self,
        x: Tensor,
        attention_mask: Tensor | None = None,
        mask: Tensor | None = None,
        return_layers: bool = False,
    ) -> EncoderOutput:
        feat, padding_mask = self.embed(x, attention_mask)
        return self.contextualize(feat, padding_mask, mask, return_layers)

    def num_tokens(self, input_len: int | None = None) -> int:
        """Token positions T the encoder yields (CLS excluded)."""
        raise NotImplementedError

    def flops_per_sample(self, input_len: int | None = None) -> dict[str, int]:
        """Forward matmul FLOPs per sample: {"frontend": ..., "transformer": ...}."""
        raise NotImplementedError

    def _no_attention_mask(self, attention_mask: Tensor | None) -> None:
        if attention_mask is not None:
            raise ValueError(f"{self.modality} encoder takes no attention_mask (fixed-size inputs)")
