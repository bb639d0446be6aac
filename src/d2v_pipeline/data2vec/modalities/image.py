"""Images: ViT front-end (spec §4), BEiT block masks for v1 and inverse block masks for v2
(spec §3), a 2-D conv decoder over the patch grid (spec §5), MAE pixel targets (spec §10.2)
and the image defaults of spec §1-§5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import config_base as cb  # the modality-neutral config bases
from ..encoder_base import Encoder, EncoderOutput
from ..masking import MaskedBatch, block_mask, inverse_block_mask
from .base import Batch, Modality, normalize_per_token


# ---------------------------------------------------------------- configs (spec defaults)
@dataclass(kw_only=True)
class ImageEncoderConfig(cb.EncoderConfig):
    """ViT: linear patch embedding, CLS token, learned absolute positions."""

    modality: ClassVar[str] = "image"
    image_size: int = 28
    in_channels: int = 1
    patch_size: int = 7

    def __post_init__(self) -> None:
        super().__post_init__()
        # the patch conv would silently drop the pixels past the last whole patch
        cb.require(
            self.patch_size >= 1 and self.image_size % self.patch_size == 0,
            f"image_size {self.image_size} not divisible by patch_size {self.patch_size}",
        )

    @property
    def grid(self) -> tuple[int, int]:
        g = self.image_size // self.patch_size
        return g, g


@dataclass(kw_only=True)
class ImageMaskConfig(cb.MaskConfig):
    """BEiT block masking; ``mask_prob`` is the fraction of patches to mask (spec §3: 60%)."""

    modality: ClassVar[str] = "image"
    mask_prob: float = 0.6
    min_num_patches: int = 4  # spec §4 tiny: min block 4 patches
    max_num_patches: int | None = None  # None = the target count
    min_aspect: float = 0.3


@dataclass(kw_only=True)
class ImageData2VecConfig(cb.Data2VecConfig):
    modality: ClassVar[str] = "image"
    mask: ImageMaskConfig = field(default_factory=ImageMaskConfig)
    top_k: int = 2  # spec §1.1: K = 6 of 12 for ViT-B -> half the depth
    tap: cb.Tap = "block"  # spec §1.1: vision v1 as released taps the end of the block
    target_layer_norm: cb.TargetNorm = "layer"  # spec §1.2: LN per layer ...
    target_final_norm: cb.TargetNorm = "layer"  # ... and LN again after averaging (DV)
    loss_beta: float = 2.0
    loss_reduce: Literal["sum", "mean"] = "mean"  # DV: F.smooth_l1_loss default (mean)
    loss_scale: float | None = 1.0
    ema_decay: float = 0.9998  # spec §2: constant 0.9998 (P1, DV)
    ema_end_decay: float = 0.9998
    ema_anneal_end_step: int = 0
    ema_ref_steps: int = 500_000  # ≈ 800 ImageNet epochs at batch 2,048 (assumed; spec gives none)


@dataclass(kw_only=True)
class ImageMask2Config(cb.MaskConfig):
    """Inverse block masking (spec §3, v2): ``mask_prob`` = R; exactly int(L·(1-R)) patches
    are kept per image, grown from ``int(L·(1-R+A)/B²)`` B×B blocks then adjusted at random."""

    modality: ClassVar[str] = "image"
    mask_prob: float = 0.75  # spec §4 tiny rec.: R 0.75 (Base: 0.8)
    block_size: int = 2  # B; spec §4 tiny rec.: 2 on a small grid (Base: 3)
    adjust: float = 0.07  # A, FS mask_prob_adjust (Base 0.07)

    def __post_init__(self) -> None:
        # the mask divides by block_size² (how many blocks to grow)
        cb.require(self.block_size >= 1, f"block_size must be >= 1, got {self.block_size}")


@dataclass(kw_only=True)
class ImageDecoderConfig(cb.DecoderConfig):
    modality: ClassVar[str] = "image"  # FS Base: 2-D, kernel 3, groups 16, 6 layers, residual


@dataclass(kw_only=True)
class ImageData2Vec2Config(cb.Data2Vec2Config):
    modality: ClassVar[str] = "image"
    mask: ImageMask2Config = field(default_factory=ImageMask2Config)
    decoder: ImageDecoderConfig = field(default_factory=ImageDecoderConfig)
    target_final_norm: cb.TargetNorm = "layer"  # spec §1.2: IN -> AVG -> LN
    loss_scale: float | None = None
    cls_loss: float = 0.01  # spec §5 item 5
    ema_decay: float = 0.9998  # spec §2 table, images v2 Base
    ema_end_decay: float = 0.99999
    ema_anneal_end_step: int = 100_000
    ema_ref_steps: int = 375_300


@dataclass(kw_only=True)
class ImageReconConfig(cb.ReconConfig):
    modality: ClassVar[str] = "image"
    mask: ImageMaskConfig = field(default_factory=ImageMaskConfig)


# ---------------------------------------------------------------- encoder (spec §4)
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

    def mask_embedding(self) -> Tensor:
        return self.mask_emb

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


# ---------------------------------------------------------------- the modality
class ImageModality(Modality):
    """Teacher (spec §2): v1 and v2 average every encoder parameter (FS ema_local_encoder:
    patch embedding, CLS, positions and blocks); nothing is shared or copied."""

    name = "image"
    encoder_class = ImageEncoder
    encoder_config = ImageEncoderConfig
    mask_config = ImageMaskConfig
    data2vec_config = ImageData2VecConfig
    mask2_config = ImageMask2Config
    decoder_config = ImageDecoderConfig
    data2vec2_config = ImageData2Vec2Config
    recon_config = ImageReconConfig
    cls_tokens = 1

    def v1_mask(
        self,
        encoder: Encoder,
        batch: Batch,
        cfg: cb.MaskConfig,
        generator: torch.Generator | None,
        scored: str = "masked",
    ) -> MaskedBatch:
        """Spec §3: BEiT blocks over the patch grid; the masked patches are the scored ones."""
        x = batch["x"]
        m = block_mask(x.shape[0], encoder.cfg.grid, cfg, generator).to(x.device)
        return MaskedBatch(x, m, m)

    def v2_mask(
        self,
        encoder: Encoder,
        batch: Batch,
        cfg: cb.MaskConfig,
        clones: int,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Spec §3 v2: inverse block masks, exactly int(L·(1-R)) patches kept per clone."""
        rows = batch["x"].shape[0] * clones
        return inverse_block_mask(rows, encoder.cfg.grid, cfg, generator)

    def decoder_grid(self, encoder: Encoder) -> tuple[int, int]:
        """Spec §5 item 4: images decode with 2-D convolutions over the patch grid."""
        return encoder.cfg.grid

    def recon_head(self, encoder: Encoder) -> nn.Module:
        """Spec §10.2 (MAE): the pixels of a patch."""
        ec = encoder.cfg
        return nn.Linear(encoder.dim, ec.in_channels * ec.patch_size**2)

    def recon_targets(self, encoder: Encoder, x: Tensor, norm_target: bool) -> Tensor:
        """Spec §10.2 (MAE): (B, T, P·P·C) patch pixels, normalised per patch if configured."""
        p = encoder.cfg.patch_size
        b, c, h, w = x.shape
        t = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        t = t.reshape(b, (h // p) * (w // p), p * p * c)
        return normalize_per_token(t, norm_target)
