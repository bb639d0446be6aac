"""Speech: wav2vec 2.0 conv front-end (spec §4), span masks for v1 and equal-count spans for
v2 (spec §3), a shared front-end and copied positional conv in the v1 teacher (spec §2), a 1-D
decoder (spec §5), normalised waveform-frame targets (spec §10.2) and the speech defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import config_base as cb  # the modality-neutral config bases
from ..encoder_base import Encoder
from ..masking import MaskedBatch, equal_span_mask, span_mask
from .base import Batch, Modality, normalize_per_token


# ---------------------------------------------------------------- configs (spec defaults)
@dataclass(kw_only=True)
class SpeechEncoderConfig(cb.EncoderConfig):
    """wav2vec 2.0 conv feature encoder (spec kernel/stride list, 64 channels) + conv positions."""

    modality: ClassVar[str] = "speech"
    dropout: float = 0.1
    attention_dropout: float = 0.1
    layerdrop: float = 0.05  # spec §4: layerdrop 0.05 (v1)
    sample_rate: int = 16000
    sample_len: int = 16000
    conv_channels: int = 64
    conv_kernels: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_strides: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    pos_conv_depth: int = 2
    pos_conv_kernel: int = 19
    pos_conv_groups: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        # shapes: one stride per kernel, position convs split dim into groups, odd kernels keep
        # the length, and the data's clip length must yield frames (the schema never sees it)
        cb.require(len(self.conv_kernels) == len(self.conv_strides), "conv_kernels/strides differ")
        cb.require(self.dim % self.pos_conv_groups == 0, "dim not divisible by pos_conv_groups")
        cb.require(self.pos_conv_kernel % 2 == 1, "pos_conv_kernel must be odd ('same' padding)")
        cb.require(self.num_frames(self.sample_len) > 0, f"sample_len {self.sample_len} too short")

    def num_frames(self, num_samples: int) -> int:
        """Frames the conv stack yields for ``num_samples`` (16,000 -> 49, spec §4)."""
        t = num_samples
        for k, s in zip(self.conv_kernels, self.conv_strides, strict=True):
            t = (t - k) // s + 1
        return t

    def receptive_field(self) -> tuple[int, int]:
        """(samples one frame covers, hop in samples): (400, 320) for the spec list."""
        rf, hop = 1, 1
        for k, s in zip(self.conv_kernels, self.conv_strides, strict=True):
            rf += (k - 1) * hop
            hop *= s
        return rf, hop


@dataclass(kw_only=True)
class SpeechMaskConfig(cb.MaskConfig):
    """wav2vec 2.0 span masking: ``mask_prob`` = p·M start probability mass (spec §3: 0.65/10)."""

    modality: ClassVar[str] = "speech"
    mask_prob: float = 0.65
    mask_length: int = 10
    min_masks: int = 0
    # FS defaults to True (trim every row to the smallest count). At T = 49 that trim drops
    # coverage from ~50% to ~29% for a batch of 64 (measured), far from P1's ~49%, and v1
    # does not need equal counts (the loss gathers masked tokens flat): off by default.
    require_same_masks: bool = False


@dataclass(kw_only=True)
class SpeechData2VecConfig(cb.Data2VecConfig):
    modality: ClassVar[str] = "speech"
    mask: SpeechMaskConfig = field(default_factory=SpeechMaskConfig)
    top_k: int = 3  # spec §2: K = 8 of 12 -> 2/3 of the depth
    tap: cb.Tap = "ffn"
    target_layer_norm: cb.TargetNorm = "instance"  # spec §1.2: instance norm over time
    target_final_norm: cb.TargetNorm = "none"
    loss_beta: float = 0.0  # spec §1.3: L2
    loss_scale: float | None = None  # sum over D times 1/sqrt(D)
    ema_decay: float = 0.999
    ema_end_decay: float = 0.9999
    ema_anneal_end_step: int = 30_000
    ema_ref_steps: int = 400_000


@dataclass(kw_only=True)
class SpeechMask2Config(SpeechMaskConfig):
    """v2 spans (spec §3: mask_prob 0.5, length 5). v2 gathers the visible frames into a dense
    batch, so every row is then brought to the same masked count: the batch mean, by masking
    or unmasking random frames (with ``require_same_masks`` rows are first trimmed to the
    batch minimum, as FS does, which makes the adjustment a no-op)."""

    mask_prob: float = 0.5
    mask_length: int = 5


@dataclass(kw_only=True)
class SpeechDecoderConfig(cb.DecoderConfig):
    modality: ClassVar[str] = "speech"  # FS Base: 1-D, kernel 7, groups 16, 4 layers, drop 0.1
    kernel: int = 7
    input_dropout: float = 0.1


@dataclass(kw_only=True)
class SpeechData2Vec2Config(cb.Data2Vec2Config):
    modality: ClassVar[str] = "speech"
    mask: SpeechMask2Config = field(default_factory=SpeechMask2Config)
    decoder: SpeechDecoderConfig = field(default_factory=SpeechDecoderConfig)
    target_final_norm: cb.TargetNorm = "none"  # spec §1.2: IN -> AVG
    loss_scale: float | None = None
    ema_decay: float = 0.999  # spec §2 table, speech v2 Base
    ema_end_decay: float = 0.99999
    ema_anneal_end_step: int = 75_000
    ema_ref_steps: int = 400_000


@dataclass(kw_only=True)
class SpeechReconConfig(cb.ReconConfig):
    modality: ClassVar[str] = "speech"
    mask: SpeechMaskConfig = field(default_factory=SpeechMaskConfig)


# ---------------------------------------------------------------- encoder (spec §4)
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
    """

    modality = "speech"

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

    def mask_embedding(self) -> Tensor:
        return self.mask_emb

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


# ---------------------------------------------------------------- the modality
class SpeechModality(Modality):
    """Teacher (spec §2): it consumes the student's conv features (shared front-end); v1
    copies the positional conv and averages the rest, v2 averages the positional conv too."""

    name = "speech"
    encoder_class = SpeechEncoder
    encoder_config = SpeechEncoderConfig
    mask_config = SpeechMaskConfig
    data2vec_config = SpeechData2VecConfig
    mask2_config = SpeechMask2Config
    decoder_config = SpeechDecoderConfig
    data2vec2_config = SpeechData2Vec2Config
    recon_config = SpeechReconConfig
    v1_teacher_copies = ("pos_conv.",)
    teacher_shares_frontend = True

    def input_len(self, x: Tensor) -> int:
        """Waveform samples per clip: the conv stack's frame count follows them."""
        return x.shape[-1]

    def v1_mask(
        self,
        encoder: Encoder,
        batch: Batch,
        cfg: cb.MaskConfig,
        generator: torch.Generator | None,
        scored: str = "masked",
    ) -> MaskedBatch:
        """Spec §3: wav2vec 2.0 spans over the conv frames; the masked frames are scored."""
        x = batch["x"]
        t = encoder.num_tokens(x.shape[1])
        m = span_mask(x.shape[0], t, cfg, generator).to(x.device)
        return MaskedBatch(x, m, m)

    def scored_fraction(self, mask_prob: float) -> float:
        """Spans overlap: p·M = 0.65 with M = 10 covers ~50% of the frames (spec §3)."""
        return min(1.0, 0.8 * mask_prob)

    def v2_mask(
        self,
        encoder: Encoder,
        batch: Batch,
        cfg: cb.MaskConfig,
        clones: int,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Spec §3 v2: spans, then every row brought to the batch's mean masked count."""
        x = batch["x"]
        return equal_span_mask(x.shape[0] * clones, encoder.num_tokens(x.shape[1]), cfg, generator)

    def recon_head(self, encoder: Encoder) -> nn.Module:
        """Spec §10.2: the waveform samples one conv frame covers (no torchaudio for log-mel)."""
        frame_len, _ = encoder.cfg.receptive_field()
        return nn.Linear(encoder.dim, frame_len)

    def recon_targets(self, encoder: Encoder, x: Tensor, norm_target: bool) -> Tensor:
        """Spec §10.2: (B, T, frame_len) waveform frames under each conv frame's receptive
        field, normalised per frame if configured."""
        frame_len, hop = encoder.cfg.receptive_field()
        n = encoder.num_tokens(x.shape[1])
        t = x.unfold(1, frame_len, hop)
        if t.shape[1] < n:
            raise ValueError(f"{t.shape[1]} waveform frames for {n} conv frames")
        return normalize_per_token(t[:, :n], norm_target)
