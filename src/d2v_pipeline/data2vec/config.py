"""Configuration dataclasses for the data2vec library.

Defaults are the tiny recommendations of spec §4 (MNIST 28×28 patch 7, 1 s of 16 kHz speech,
64-token text; D 128, depth 4, 4 heads, FFN 512) with the per-modality masking, targets, τ
and loss of spec §1-§3. Every class has a ``*_from_dict`` builder that rejects unknown keys.

τ defaults are the paper's (400k-1M step runs). For runs of a few thousand steps the
recommended setting is spec §2's rescaling, ``Data2VecConfig.short_run(steps)``, or an explicit
schedule in the params (the calibration run used 0.99 -> 0.999 over the first 30%).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

MODALITIES = ("image", "speech", "text")
METHODS = ("data2vec", "data2vec2", "masked_recon")

Tap = Literal["ffn", "block"]
TargetNorm = Literal["instance", "layer", "none"]


# ---------------------------------------------------------------- encoders (spec §4)
@dataclass(kw_only=True)
class EncoderConfig:
    """Transformer settings shared by every front-end (pre-LN blocks)."""

    modality: ClassVar[str] = ""
    dim: int = 128
    depth: int = 4
    heads: int = 4
    ffn_dim: int = 512
    dropout: float = 0.0
    attention_dropout: float = 0.0
    layerdrop: float = 0.0
    layer_scale_init: float | None = None  # LayerScale γ init; None = off

    def __post_init__(self) -> None:
        _check(self.dim > 0 and self.depth > 0 and self.heads > 0, "dim/depth/heads must be > 0")
        _check(self.dim % self.heads == 0, f"dim {self.dim} not divisible by heads {self.heads}")
        for name in ("dropout", "attention_dropout", "layerdrop"):
            _check(0.0 <= getattr(self, name) < 1.0, f"{name} must be in [0, 1)")


@dataclass(kw_only=True)
class ImageEncoderConfig(EncoderConfig):
    """ViT: linear patch embedding, CLS token, learned absolute positions."""

    modality: ClassVar[str] = "image"
    image_size: int = 28
    in_channels: int = 1
    patch_size: int = 7

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            self.image_size % self.patch_size == 0,
            f"image_size {self.image_size} not divisible by patch_size {self.patch_size}",
        )

    @property
    def grid(self) -> tuple[int, int]:
        g = self.image_size // self.patch_size
        return g, g


@dataclass(kw_only=True)
class SpeechEncoderConfig(EncoderConfig):
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
        _check(len(self.conv_kernels) == len(self.conv_strides), "conv_kernels/strides differ")
        _check(self.dim % self.pos_conv_groups == 0, "dim not divisible by pos_conv_groups")
        _check(self.pos_conv_kernel % 2 == 1, "pos_conv_kernel must be odd ('same' padding)")
        _check(self.num_frames(self.sample_len) > 0, f"sample_len {self.sample_len} too short")

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
class TextEncoderConfig(EncoderConfig):
    """Token + learned positions + embedding LayerNorm; vocabulary and ids come from the data."""

    modality: ClassVar[str] = "text"
    dropout: float = 0.1  # spec §4: dropout 0.1
    attention_dropout: float = 0.1
    vocab_size: int
    pad_id: int
    mask_id: int
    cls_id: int | None = None
    special_ids: tuple[int, ...] = ()  # extra ids never masked nor drawn as random tokens
    seq_len: int = 64  # maximum length (learned positions)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.vocab_size > 1, f"vocab_size must be > 1, got {self.vocab_size}")
        for name in ("pad_id", "mask_id", "cls_id"):
            v = getattr(self, name)
            _check(v is None or 0 <= v < self.vocab_size, f"{name}={v} outside the vocabulary")

    @property
    def never_masked_ids(self) -> tuple[int, ...]:
        ids = {self.pad_id, self.mask_id, *self.special_ids}
        if self.cls_id is not None:
            ids.add(self.cls_id)
        return tuple(sorted(ids))


# ---------------------------------------------------------------- masking (spec §3)
@dataclass(kw_only=True)
class MaskConfig:
    modality: ClassVar[str] = ""
    mask_prob: float

    def __post_init__(self) -> None:
        _check(0.0 <= self.mask_prob <= 1.0, f"mask_prob must be in [0, 1], got {self.mask_prob}")


@dataclass(kw_only=True)
class ImageMaskConfig(MaskConfig):
    """BEiT block masking; ``mask_prob`` is the fraction of patches to mask (spec §3: 60%)."""

    modality: ClassVar[str] = "image"
    mask_prob: float = 0.6
    min_num_patches: int = 4  # spec §4 tiny: min block 4 patches
    max_num_patches: int | None = None  # None = the target count
    min_aspect: float = 0.3


@dataclass(kw_only=True)
class SpeechMaskConfig(MaskConfig):
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
class TextMaskConfig(MaskConfig):
    """BERT masking: 15% of real tokens, of which 80% <mask> / 10% random / 10% unchanged."""

    modality: ClassVar[str] = "text"
    mask_prob: float = 0.15
    random_token_prob: float = 0.1
    leave_unmasked_prob: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.random_token_prob + self.leave_unmasked_prob <= 1.0, "random+unmasked > 1")


# ---------------------------------------------------------------- data2vec v1 (spec §1, §2)
@dataclass(kw_only=True)
class Data2VecConfig:
    """Teacher, targets and loss. ``ema_ref_steps`` is the reference run length for short_run()."""

    modality: ClassVar[str] = ""
    mask: MaskConfig
    top_k: int
    tap: Tap
    target_layer_norm: TargetNorm
    target_final_norm: TargetNorm
    head_layers: int = 1
    loss_beta: float  # 0 = L2 (MSE), else Smooth L1 with this beta
    loss_reduce: Literal["sum", "mean"] = "sum"  # over the D channels of a token
    loss_scale: float | None  # None = 1/sqrt(D)
    ema_decay: float
    ema_end_decay: float
    ema_anneal_end_step: int
    ema_ref_steps: int

    def __post_init__(self) -> None:
        _check(self.top_k >= 1, f"top_k must be >= 1, got {self.top_k}")
        _check(self.head_layers >= 1, "head_layers must be >= 1")
        _check(self.loss_beta >= 0, "loss_beta must be >= 0")
        for name in ("ema_decay", "ema_end_decay"):
            _check(0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1]")
        _check(self.ema_anneal_end_step >= 0, "ema_anneal_end_step must be >= 0")

    def short_run(self, steps: int, floor: float = 0.9) -> Data2VecConfig:
        """Spec §2 rec. for short runs: keep tau_n/T, scale the teacher memory 1/(1-tau) by T/T_ref.

        ``tau' = max(floor, 1 - (1 - tau) * T_ref / T)``; ``tau_n' = round(tau_n * T / T_ref)``.
        E.g. speech at T = 2,000: 0.999 -> 0.9, 0.9999 -> 0.98, tau_n 30,000 -> 150.
        """
        return _short_run(self, steps, floor)


def _short_run(cfg: Any, steps: int, floor: float) -> Any:
    """The spec §2 short-run rescaling of any config with ``ema_*`` fields (v1 and v2)."""
    _check(steps > 0, "steps must be > 0")
    ratio = cfg.ema_ref_steps / steps

    def scale(tau: float) -> float:
        return tau if tau >= 1.0 else max(floor, 1.0 - (1.0 - tau) * ratio)

    return dataclasses.replace(
        cfg,
        ema_decay=scale(cfg.ema_decay),
        ema_end_decay=scale(cfg.ema_end_decay),
        ema_anneal_end_step=round(cfg.ema_anneal_end_step / ratio),
    )


@dataclass(kw_only=True)
class ImageData2VecConfig(Data2VecConfig):
    modality: ClassVar[str] = "image"
    mask: ImageMaskConfig = field(default_factory=ImageMaskConfig)
    top_k: int = 2  # spec §1.1: K = 6 of 12 for ViT-B -> half the depth
    tap: Tap = "block"  # spec §1.1: vision v1 as released taps the end of the block
    target_layer_norm: TargetNorm = "layer"  # spec §1.2: LN per layer ...
    target_final_norm: TargetNorm = "layer"  # ... and LN again after averaging (DV)
    loss_beta: float = 2.0
    loss_reduce: Literal["sum", "mean"] = "mean"  # DV: F.smooth_l1_loss default (mean)
    loss_scale: float | None = 1.0
    ema_decay: float = 0.9998  # spec §2: constant 0.9998 (P1, DV)
    ema_end_decay: float = 0.9998
    ema_anneal_end_step: int = 0
    ema_ref_steps: int = 500_000  # ≈ 800 ImageNet epochs at batch 2,048 (assumed; spec gives none)


@dataclass(kw_only=True)
class SpeechData2VecConfig(Data2VecConfig):
    modality: ClassVar[str] = "speech"
    mask: SpeechMaskConfig = field(default_factory=SpeechMaskConfig)
    top_k: int = 3  # spec §2: K = 8 of 12 -> 2/3 of the depth
    tap: Tap = "ffn"
    target_layer_norm: TargetNorm = "instance"  # spec §1.2: instance norm over time
    target_final_norm: TargetNorm = "none"
    loss_beta: float = 0.0  # spec §1.3: L2
    loss_scale: float | None = None  # sum over D times 1/sqrt(D)
    ema_decay: float = 0.999
    ema_end_decay: float = 0.9999
    ema_anneal_end_step: int = 30_000
    ema_ref_steps: int = 400_000


@dataclass(kw_only=True)
class TextData2VecConfig(Data2VecConfig):
    modality: ClassVar[str] = "text"
    mask: TextMaskConfig = field(default_factory=TextMaskConfig)
    top_k: int = 3  # spec §2: K = 10 of 12
    tap: Tap = "ffn"
    target_layer_norm: TargetNorm = "layer"  # spec §1.2: LN over channels per token
    target_final_norm: TargetNorm = "none"
    head_layers: int = 2  # spec §1.3: Linear(D,2D)-GELU-Linear(2D,D)
    loss_beta: float = 4.0
    loss_scale: float | None = 1.0
    ema_decay: float = 0.999
    ema_end_decay: float = 0.9999
    ema_anneal_end_step: int = 100_000  # P1 (FS base.yaml uses 300,000)
    ema_ref_steps: int = 1_000_000


# ---------------------------------------------------------------- data2vec 2.0 (spec §5)
@dataclass(kw_only=True)
class ImageMask2Config(MaskConfig):
    """Inverse block masking (spec §3, v2): ``mask_prob`` = R; exactly int(L·(1-R)) patches
    are kept per image, grown from ``int(L·(1-R+A)/B²)`` B×B blocks then adjusted at random."""

    modality: ClassVar[str] = "image"
    mask_prob: float = 0.75  # spec §4 tiny rec.: R 0.75 (Base: 0.8)
    block_size: int = 2  # B; spec §4 tiny rec.: 2 on a small grid (Base: 3)
    adjust: float = 0.07  # A, FS mask_prob_adjust (Base 0.07)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            self.mask_prob < 1.0, f"mask_prob must be < 1 (some patches kept), got {self.mask_prob}"
        )
        _check(self.block_size >= 1, f"block_size must be >= 1, got {self.block_size}")
        _check(self.adjust >= 0.0, f"adjust must be >= 0, got {self.adjust}")


@dataclass(kw_only=True)
class SpeechMask2Config(SpeechMaskConfig):
    """v2 spans (spec §3: mask_prob 0.5, length 5). v2 gathers the visible frames into a dense
    batch, so every row is then brought to the same masked count: the batch mean, by masking
    or unmasking random frames (with ``require_same_masks`` rows are first trimmed to the
    batch minimum, as FS does, which makes the adjustment a no-op)."""

    mask_prob: float = 0.5
    mask_length: int = 5


@dataclass(kw_only=True)
class TextMask2Config(MaskConfig):
    """v2 text (spec §3): exactly round(mask_prob·n) of the n maskable real tokens per row,
    single tokens (FS mask_length 1); padding and special ids are never masked."""

    modality: ClassVar[str] = "text"
    mask_prob: float = 0.48


@dataclass(kw_only=True)
class DecoderConfig:
    """Convolutional decoder (spec §5 item 4): ``layers`` × [grouped conv -> LayerNorm (no
    affine) -> GELU], residual between layers, then a projection back to D (``projection_layers``
    2 = Linear(C, 2D)-GELU-Linear(2D, D), the text variant). Images convolve in 2-D over the
    patch grid, speech and text in 1-D over positions. ``dim`` None = the encoder width."""

    modality: ClassVar[str] = ""
    dim: int | None = None
    layers: int = 2  # spec §5 rec. for CPU: 2-3 layers of width D
    kernel: int = 3
    groups: int = 8
    residual: bool = True
    input_dropout: float = 0.0
    projection_layers: int = 1

    def __post_init__(self) -> None:
        _check(self.dim is None or self.dim > 0, f"decoder dim must be > 0, got {self.dim}")
        _check(self.layers >= 1, f"decoder layers must be >= 1, got {self.layers}")
        _check(self.kernel >= 1 and self.kernel % 2 == 1, f"kernel must be odd, got {self.kernel}")
        _check(self.groups >= 1, f"groups must be >= 1, got {self.groups}")
        _check(0.0 <= self.input_dropout < 1.0, "input_dropout must be in [0, 1)")
        _check(self.projection_layers in (1, 2), "projection_layers must be 1 or 2")
        if self.dim is not None:
            _check(self.dim % self.groups == 0, f"dim {self.dim} not divisible by {self.groups}")


@dataclass(kw_only=True)
class ImageDecoderConfig(DecoderConfig):
    modality: ClassVar[str] = "image"  # FS Base: 2-D, kernel 3, groups 16, 6 layers, residual


@dataclass(kw_only=True)
class SpeechDecoderConfig(DecoderConfig):
    modality: ClassVar[str] = "speech"  # FS Base: 1-D, kernel 7, groups 16, 4 layers, drop 0.1
    kernel: int = 7
    input_dropout: float = 0.1


@dataclass(kw_only=True)
class TextDecoderConfig(DecoderConfig):
    modality: ClassVar[str] = "text"  # FS Base: 1-D, kernel 9, groups 1, 5 layers, NO residual
    kernel: int = 9
    groups: int = 1
    residual: bool = False
    input_dropout: float = 0.1
    projection_layers: int = 2  # Linear(768, 1536)-GELU-Linear(1536, 768)


@dataclass(kw_only=True)
class Data2Vec2Config:
    """data2vec 2.0 (spec §5): M clones per sample share one teacher pass; the student encodes
    visible tokens only; a conv decoder fills the masked slots; L2 at masked positions.

    ``top_k``: spec §5 rec. for CPU is K = depth (default 4 = the default depth; None = every
    block of whatever depth). ``loss_scale`` None =
    1/sqrt(D) (spec §1.3 v2: images, speech); text 1. ``cls_loss`` (images only, spec §5
    item 5): weight of the CLS output regressing the mean of the patch targets.
    """

    modality: ClassVar[str] = ""
    mask: MaskConfig
    decoder: DecoderConfig
    clones: int = 4  # spec §5 rec. for CPU: M = 4 (FS: images 16, speech/text 8)
    top_k: int | None = 4
    tap: Tap = "ffn"  # spec §1.1: every v2 modality taps the FFN output
    target_layer_norm: TargetNorm = "instance"  # spec §1.2 v2 rows: instance norm per layer
    target_final_norm: TargetNorm
    loss_scale: float | None
    cls_loss: float = 0.0
    mask_noise_std: float = 0.01  # spec §5 item 4
    ema_decay: float
    ema_end_decay: float
    ema_anneal_end_step: int
    ema_ref_steps: int

    def __post_init__(self) -> None:
        _check(self.clones >= 1, f"clones must be >= 1, got {self.clones}")
        _check(self.top_k is None or self.top_k >= 1, f"top_k must be >= 1, got {self.top_k}")
        _check(self.cls_loss >= 0.0 and self.mask_noise_std >= 0.0, "negative weight or std")
        _check(self.loss_scale is None or self.loss_scale > 0, "loss_scale must be > 0")
        for name in ("ema_decay", "ema_end_decay"):
            _check(0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1]")
        _check(self.ema_anneal_end_step >= 0, "ema_anneal_end_step must be >= 0")

    def short_run(self, steps: int, floor: float = 0.9) -> Data2Vec2Config:
        """Spec §2 rec. for short runs (same rule as :meth:`Data2VecConfig.short_run`)."""
        return _short_run(self, steps, floor)


@dataclass(kw_only=True)
class ImageData2Vec2Config(Data2Vec2Config):
    modality: ClassVar[str] = "image"
    mask: ImageMask2Config = field(default_factory=ImageMask2Config)
    decoder: ImageDecoderConfig = field(default_factory=ImageDecoderConfig)
    target_final_norm: TargetNorm = "layer"  # spec §1.2: IN -> AVG -> LN
    loss_scale: float | None = None
    cls_loss: float = 0.01  # spec §5 item 5
    ema_decay: float = 0.9998  # spec §2 table, images v2 Base
    ema_end_decay: float = 0.99999
    ema_anneal_end_step: int = 100_000
    ema_ref_steps: int = 375_300


@dataclass(kw_only=True)
class SpeechData2Vec2Config(Data2Vec2Config):
    modality: ClassVar[str] = "speech"
    mask: SpeechMask2Config = field(default_factory=SpeechMask2Config)
    decoder: SpeechDecoderConfig = field(default_factory=SpeechDecoderConfig)
    target_final_norm: TargetNorm = "none"  # spec §1.2: IN -> AVG
    loss_scale: float | None = None
    ema_decay: float = 0.999  # spec §2 table, speech v2 Base
    ema_end_decay: float = 0.99999
    ema_anneal_end_step: int = 75_000
    ema_ref_steps: int = 400_000


@dataclass(kw_only=True)
class TextData2Vec2Config(Data2Vec2Config):
    modality: ClassVar[str] = "text"
    mask: TextMask2Config = field(default_factory=TextMask2Config)
    decoder: TextDecoderConfig = field(default_factory=TextDecoderConfig)
    target_final_norm: TargetNorm = "none"  # spec §1.2: IN (changed from v1's LN) -> AVG
    loss_scale: float | None = 1.0  # spec §1.3: text sums over D, scale 1
    ema_decay: float = 0.9999  # spec §2 table, text v2 Base
    ema_end_decay: float = 0.99999
    ema_anneal_end_step: int = 100_000
    ema_ref_steps: int = 1_000_000


# ---------------------------------------------------------------- masked reconstruction (§10)
@dataclass(kw_only=True)
class ReconConfig:
    """Masked input reconstruction baseline with the same encoder and masks (spec §10.2)."""

    modality: ClassVar[str] = ""
    mask: MaskConfig
    norm_target: bool = True  # per-patch / per-frame mean-variance normalisation (MAE)


@dataclass(kw_only=True)
class ImageReconConfig(ReconConfig):
    modality: ClassVar[str] = "image"
    mask: ImageMaskConfig = field(default_factory=ImageMaskConfig)


@dataclass(kw_only=True)
class SpeechReconConfig(ReconConfig):
    modality: ClassVar[str] = "speech"
    mask: SpeechMaskConfig = field(default_factory=SpeechMaskConfig)


@dataclass(kw_only=True)
class TextReconConfig(ReconConfig):
    modality: ClassVar[str] = "text"
    mask: TextMaskConfig = field(default_factory=TextMaskConfig)


# ---------------------------------------------------------------- training loop
@dataclass(kw_only=True)
class TrainConfig:
    """One pretraining run. Warmup is a fraction of ``steps``; cosine decay to ``min_lr``."""

    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 0.0
    warmup_frac: float = 0.1
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float = 1.0  # 0 = off
    seed: int = 0
    threads: int = 2
    device: str = "cpu"  # "cpu", "cuda" or "auto"
    augment_shift: int = 0  # images only: random shift of up to this many pixels
    # text only: drop the padding and cut the concatenated token stream into full rows
    # (RoBERTa's "full sentences", fairseq's break mode "complete"); see train.pack_sequences
    pack_sequences: bool = False
    log_every: int = 10
    checkpoint_every: int = 200  # 0 = only the final checkpoint
    collapse_target_std: float = 0.1  # spec §9 thresholds
    collapse_pred_std: float = 0.01
    collapse_grace_steps: int = 100  # tiny pred std early on is normal (calibration.md)
    stop_on_collapse: bool = False

    def __post_init__(self) -> None:
        _check(self.steps > 0 and self.batch_size > 0, "steps and batch_size must be > 0")
        _check(self.lr > 0 and self.min_lr >= 0, "lr must be > 0 and min_lr >= 0")
        _check(0.0 <= self.warmup_frac < 1.0, "warmup_frac must be in [0, 1)")
        _check(self.threads >= 1 and self.log_every >= 1, "threads and log_every must be >= 1")
        _check(self.checkpoint_every >= 0 and self.augment_shift >= 0, "negative count")
        _check(
            self.device in ("cpu", "cuda", "auto"), f"device must be cpu/cuda/auto: {self.device}"
        )


# ---------------------------------------------------------------- from_dict helpers
_ENCODERS = {c.modality: c for c in (ImageEncoderConfig, SpeechEncoderConfig, TextEncoderConfig)}
_MASKS = {c.modality: c for c in (ImageMaskConfig, SpeechMaskConfig, TextMaskConfig)}
_D2V = {c.modality: c for c in (ImageData2VecConfig, SpeechData2VecConfig, TextData2VecConfig)}
_RECON = {c.modality: c for c in (ImageReconConfig, SpeechReconConfig, TextReconConfig)}
_D2V2 = {c.modality: c for c in (ImageData2Vec2Config, SpeechData2Vec2Config, TextData2Vec2Config)}
_MASKS2 = {c.modality: c for c in (ImageMask2Config, SpeechMask2Config, TextMask2Config)}
_DECODERS = {c.modality: c for c in (ImageDecoderConfig, SpeechDecoderConfig, TextDecoderConfig)}


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _pick(table: Mapping[str, type], modality: str) -> type:
    if modality not in table:
        raise ConfigError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    return table[modality]


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a simple type hint, converting lists to tuples and dicts to
    dataclasses; raise ConfigError naming ``where``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(
            _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _from_dict(cls: type, data: Mapping[str, Any] | None, where: str, **nested: type) -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad values raise ConfigError."""
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (allowed: {sorted(fields)})")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in nested:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}.{key}: expected a mapping")
            kwargs[key] = _from_dict(nested[key], value, f"{where}.{key}")
        else:
            kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as err:  # missing required field
        raise ConfigError(f"{where}: {err}") from err
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from err


def encoder_config_from_dict(modality: str, data: Mapping[str, Any] | None) -> EncoderConfig:
    """EncoderConfig of ``modality`` from a params dict (unknown keys rejected)."""
    return _from_dict(_pick(_ENCODERS, modality), data, f"{modality}.encoder")


def mask_config_from_dict(modality: str, data: Mapping[str, Any] | None) -> MaskConfig:
    return _from_dict(_pick(_MASKS, modality), data, f"{modality}.mask")


def data2vec_config_from_dict(modality: str, data: Mapping[str, Any] | None) -> Data2VecConfig:
    return _from_dict(
        _pick(_D2V, modality), data, f"{modality}.data2vec", mask=_pick(_MASKS, modality)
    )


def data2vec2_config_from_dict(modality: str, data: Mapping[str, Any] | None) -> Data2Vec2Config:
    """data2vec 2.0 config of ``modality`` (nested ``mask``/``decoder``; unknown keys rejected)."""
    return _from_dict(
        _pick(_D2V2, modality),
        data,
        f"{modality}.data2vec2",
        mask=_pick(_MASKS2, modality),
        decoder=_pick(_DECODERS, modality),
    )


def recon_config_from_dict(modality: str, data: Mapping[str, Any] | None) -> ReconConfig:
    return _from_dict(
        _pick(_RECON, modality), data, f"{modality}.masked_recon", mask=_pick(_MASKS, modality)
    )


def method_config_from_dict(
    method: str, modality: str, data: Mapping[str, Any] | None
) -> Data2VecConfig | Data2Vec2Config | ReconConfig:
    """Config of a pretraining ``method`` ("data2vec", "data2vec2" or "masked_recon")."""
    if method == "data2vec":
        return data2vec_config_from_dict(modality, data)
    if method == "data2vec2":
        return data2vec2_config_from_dict(modality, data)
    if method == "masked_recon":
        return recon_config_from_dict(modality, data)
    raise ConfigError(f"unknown pretraining method {method!r}; expected one of {METHODS}")


def train_config_from_dict(data: Mapping[str, Any] | None) -> TrainConfig:
    return _from_dict(TrainConfig, data, "train")


def default_method_config(
    method: str, modality: str
) -> Data2VecConfig | Data2Vec2Config | ReconConfig:
    """The spec defaults of ``method`` for ``modality``."""
    return method_config_from_dict(method, modality, {})


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-friendly dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(cfg, dict_factory=lambda kv: {k: _jsonable(v) for k, v in kv})


def _jsonable(v: Any) -> Any:
    return [_jsonable(x) for x in v] if isinstance(v, tuple | list) else v
