"""Modality front-ends on the shared transformer, following the Encoder contract.

Each encoder splits its forward so that data2vec can share or copy parts (spec §2):
``embed(x)`` gives the local features before masking (patch embedding, conv features, token
embedding) and ``contextualize(feat, ...)`` applies the mask, positions and the transformer.
``contextualize`` is itself ``embed_positions`` (positions, per-modality norm and dropout) then
``encode_tokens`` (CLS + transformer), which data2vec 2.0 calls on a gathered subset of visible
tokens (spec §5 item 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import (
    EncoderConfig,
    ImageEncoderConfig,
    SpeechEncoderConfig,
    TextEncoderConfig,
    encoder_config_from_dict,
)
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
    teacher. ``teacher_copies`` names parameter prefixes the EMA teacher copies from the
    student instead of averaging; ``teacher_shares_frontend`` means the teacher consumes the
    student's ``embed`` output (spec §2).
    """

    modality: str = ""
    teacher_copies: tuple[str, ...] = ()
    teacher_shares_frontend: bool = False

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

    def contextualize(
        self,
        feat: Tensor,
        padding_mask: Tensor | None = None,
        mask: Tensor | None = None,
        return_layers: bool = False,
    ) -> EncoderOutput:
        raise NotImplementedError

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

    def _check_mask(self, mask: Tensor | None, feat: Tensor) -> None:
        if mask is not None and mask.shape != feat.shape[:2]:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} != token grid {tuple(feat.shape[:2])}"
            )

    def _no_attention_mask(self, attention_mask: Tensor | None) -> None:
        if attention_mask is not None:
            raise ValueError(f"{self.modality} encoder takes no attention_mask (fixed-size inputs)")


class ImageEncoder(Encoder):
    """ViT: Conv2d patch embedding (= linear on patches), CLS token, learned positions.

    Deviation from spec §4 (v1 DV): learned absolute positions instead of BEiT relative
    position bias (keeps the fast SDPA path); LayerScale is optional (``layer_scale_init``).
    """

    modality = "image"

    def __init__(self, cfg: ImageEncoderConfig) -> None:
        super().__init__(cfg)
        p, c, d = cfg.patch_size, cfg.in_channels, cfg.dim
        n = cfg.grid[0] * cfg.grid[1]
        self.patch_embed = nn.Conv2d(c, d, kernel_size=p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(d))
        self.pos_embed = nn.Parameter(torch.zeros(n + 1, d))
        self.mask_emb = nn.Parameter(torch.zeros(d))
        for t in (self.cls_token, self.pos_embed, self.mask_emb):
            nn.init.trunc_normal_(t, std=0.02)  # spec §3: vision mask_emb trunc-normal 0.02
        w = self.patch_embed.weight
        nn.init.trunc_normal_(w.view(d, -1), std=math.sqrt(1.0 / w[0].numel()))
        nn.init.zeros_(self.patch_embed.bias)

    def embed(self, x: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, None]:
        self._no_attention_mask(attention_mask)
        cfg = self.cfg
        want = (cfg.in_channels, cfg.image_size, cfg.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"image encoder expects (B, {want}) input, got {tuple(x.shape)}")
        return self.patch_embed(x).flatten(2).transpose(1, 2), None

    def contextualize(
        self,
        feat: Tensor,
        padding_mask: Tensor | None = None,
        mask: Tensor | None = None,
        return_layers: bool = False,
    ) -> EncoderOutput:
        self._check_mask(mask, feat)
        if mask is not None:  # spec §3: masked patches replaced by mask_emb before positions
            feat = torch.where(mask.unsqueeze(-1), self.mask_emb.to(feat.dtype), feat)
        return self.encode_tokens(self.embed_positions(feat), None, return_layers)

    def embed_positions(self, feat: Tensor) -> Tensor:
        return feat + self.pos_embed[1:]

    def encode_tokens(
        self, h: Tensor, padding_mask: Tensor | None = None, return_layers: bool = False
    ) -> EncoderOutput:
        cls = (self.cls_token + self.pos_embed[0]).expand(h.shape[0], 1, -1)
        if padding_mask is not None:  # the CLS slot is never padding
            padding_mask = F.pad(padding_mask, (1, 0), value=False)
        out, layers = self.transformer(
            torch.cat([cls, h], dim=1), padding_mask, return_layers, self.tap
        )
        if layers is not None:
            layers = [t[:, 1:] for t in layers]
        pm = None if padding_mask is None else padding_mask[:, 1:]
        return EncoderOutput(out[:, 1:], layers, pm, out[:, 0])

    def num_tokens(self, input_len: int | None = None) -> int:
        g = self.cfg.grid
        return g[0] * g[1]

    def flops_per_sample(self, input_len: int | None = None) -> dict[str, int]:
        n, c, p = self.num_tokens(), self.cfg.in_channels, self.cfg.patch_size
        return {
            "frontend": 2 * n * c * p * p * self.dim,
            "transformer": self.transformer.flops_per_sample(n + 1),
        }


class _ConvLayerNormGELU(nn.Module):
    """LayerNorm over the channels of a (B, C, T) tensor, then GELU (optionally affine).

    GELU runs on the contiguous (B, T, C) layout and the result is made contiguous again:
    measured ~2x faster fwd+bwd than norming/activating transposed views.
    """

    def __init__(self, channels: int, affine: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, elementwise_affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.norm(x.transpose(1, 2))).transpose(1, 2).contiguous()


class SpeechEncoder(Encoder):
    """wav2vec 2.0 conv feature encoder (spec §4): convs without bias, each followed by
    LayerNorm over channels and GELU; LayerNorm(C) + Linear(C, D); mask_emb; conv relative
    positions (stacked grouped convs, LN without affine, GELU) added; LayerNorm; transformer.

    Teacher (spec §2, v1): shares the conv features, copies ``pos_conv``, averages the rest.
    """

    modality = "speech"
    teacher_copies = ("pos_conv.",)
    teacher_shares_frontend = True

    def __init__(self, cfg: SpeechEncoderConfig) -> None:
        super().__init__(cfg)
        layers: list[nn.Module] = []
        c_in = 1
        for k, s in zip(cfg.conv_kernels, cfg.conv_strides, strict=True):
            conv = nn.Conv1d(c_in, cfg.conv_channels, k, stride=s, bias=False)
            nn.init.kaiming_normal_(conv.weight)
            layers += [conv, _ConvLayerNormGELU(cfg.conv_channels)]
            c_in = cfg.conv_channels
        self.frontend = nn.ModuleDict(
            {
                "convs": nn.Sequential(*layers),
                "norm": nn.LayerNorm(cfg.conv_channels),
                "proj": nn.Linear(cfg.conv_channels, cfg.dim),
            }
        )
        # spec §3: speech mask_emb uniform_ init (FS: U(0, 1))
        self.mask_emb = nn.Parameter(torch.rand(cfg.dim))
        k = cfg.pos_conv_kernel
        pos: list[nn.Module] = []
        for _ in range(cfg.pos_conv_depth):
            conv = nn.Conv1d(cfg.dim, cfg.dim, k, padding=k // 2, groups=cfg.pos_conv_groups)
            pos += [conv, _ConvLayerNormGELU(cfg.dim, affine=False)]
        self.pos_conv = nn.Sequential(*pos)
        self.pos_norm = nn.LayerNorm(cfg.dim)

    def embed(self, x: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, None]:
        self._no_attention_mask(attention_mask)
        if x.dim() != 2:
            raise ValueError(f"speech encoder expects (B, samples) waveforms, got {tuple(x.shape)}")
        h = self.frontend["convs"](x.unsqueeze(1)).transpose(1, 2)  # (B, T, C)
        return self.frontend["proj"](self.frontend["norm"](h)), None

    def contextualize(
        self,
        feat: Tensor,
        padding_mask: Tensor | None = None,
        mask: Tensor | None = None,
        return_layers: bool = False,
    ) -> EncoderOutput:
        self._check_mask(mask, feat)
        if mask is not None:
            feat = torch.where(mask.unsqueeze(-1), self.mask_emb.to(feat.dtype), feat)
        return self.encode_tokens(self.embed_positions(feat), None, return_layers)

    def embed_positions(self, feat: Tensor) -> Tensor:
        pos = self.pos_conv(feat.transpose(1, 2))  # odd kernel, "same" padding
        return F.dropout(self.pos_norm(feat + pos.transpose(1, 2)), self.cfg.dropout, self.training)

    def num_tokens(self, input_len: int | None = None) -> int:
        return self.cfg.num_frames(input_len or self.cfg.sample_len)

    def flops_per_sample(self, input_len: int | None = None) -> dict[str, int]:
        cfg, t, c_in, conv = self.cfg, input_len or self.cfg.sample_len, 1, 0
        for k, s in zip(cfg.conv_kernels, cfg.conv_strides, strict=True):
            t = (t - k) // s + 1
            conv += 2 * t * c_in * k * cfg.conv_channels
            c_in = cfg.conv_channels
        pos = cfg.pos_conv_depth * 2 * t * cfg.dim * (cfg.dim // cfg.pos_conv_groups)
        pos *= cfg.pos_conv_kernel
        return {
            "frontend": conv + 2 * t * cfg.conv_channels * cfg.dim,
            "positions": pos,
            "transformer": self.transformer.flops_per_sample(t),
        }


class TextEncoder(Encoder):
    """Token embedding + learned positions + embedding LayerNorm + dropout (spec §4).

    All L positions are tokens (a CLS id in the input stays a token; ``cls`` is None).
    Masking puts the <mask> embedding in place. Teacher (spec §2, v1): copies token
    embeddings, positions and the embedding LayerNorm; averages the blocks.
    """

    modality = "text"
    teacher_copies = ("frontend.", "pos_embed", "embed_norm.")

    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__(cfg)
        self.frontend = nn.Embedding(cfg.vocab_size, cfg.dim, padding_idx=cfg.pad_id)
        self.pos_embed = nn.Parameter(torch.zeros(cfg.seq_len, cfg.dim))
        self.embed_norm = nn.LayerNorm(cfg.dim)
        nn.init.normal_(self.frontend.weight, std=0.02)
        with torch.no_grad():
            self.frontend.weight[cfg.pad_id].zero_()
        nn.init.normal_(self.pos_embed, std=0.02)

    def embed(
        self, x: Tensor, attention_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        if x.dim() != 2 or x.dtype != torch.int64:
            raise ValueError(
                f"text encoder expects (B, L) int64 ids, got {x.dtype} {tuple(x.shape)}"
            )
        if x.shape[1] > self.cfg.seq_len:
            raise ValueError(f"sequence length {x.shape[1]} > seq_len {self.cfg.seq_len}")
        padding_mask = None
        if attention_mask is not None:
            if attention_mask.shape != x.shape:
                raise ValueError(
                    f"attention_mask shape {tuple(attention_mask.shape)} != ids {tuple(x.shape)}"
                )
            padding_mask = ~attention_mask.bool()
        return self.frontend(x), padding_mask

    def contextualize(
        self,
        feat: Tensor,
        padding_mask: Tensor | None = None,
        mask: Tensor | None = None,
        return_layers: bool = False,
    ) -> EncoderOutput:
        self._check_mask(mask, feat)
        if mask is not None:
            mask_vec = self.frontend.weight[self.cfg.mask_id].to(feat.dtype)
            feat = torch.where(mask.unsqueeze(-1), mask_vec, feat)
        return self.encode_tokens(self.embed_positions(feat), padding_mask, return_layers)

    def embed_positions(self, feat: Tensor) -> Tensor:
        h = self.embed_norm(feat + self.pos_embed[: feat.shape[1]])
        return F.dropout(h, self.cfg.dropout, self.training)

    def num_tokens(self, input_len: int | None = None) -> int:
        return input_len or self.cfg.seq_len

    def flops_per_sample(self, input_len: int | None = None) -> dict[str, int]:
        t = self.num_tokens(input_len)
        return {"frontend": 0, "transformer": self.transformer.flops_per_sample(t)}


_ENCODER_CLASSES: dict[str, type[Encoder]] = {
    "image": ImageEncoder,
    "speech": SpeechEncoder,
    "text": TextEncoder,
}


def build_encoder(cfg: EncoderConfig) -> Encoder:
    """The encoder for ``cfg``'s modality."""
    return _ENCODER_CLASSES[cfg.modality](cfg)


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
