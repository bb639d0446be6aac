"""Text: token embedding front-end (spec §4), BERT masks for v1 and exact-count token masks
for v2 (spec §3), copied embeddings in the teacher (spec §2), a 1-D decoder without residual
(spec §5), the BERT masked-LM objective (spec §10.2) and the text defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import config_base as cb  # the modality-neutral config bases
from ..encoder_base import Encoder
from ..masking import MaskedBatch, bert_mask, random_token_mask
from .base import Batch, Modality


# ---------------------------------------------------------------- configs (spec defaults)
@dataclass(kw_only=True)
class TextEncoderConfig(cb.EncoderConfig):
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
        # from the tokenizer, not the parameters: ids outside the vocabulary break the embedding
        cb.require(self.vocab_size > 1, f"vocab_size must be > 1, got {self.vocab_size}")
        for name in ("pad_id", "mask_id", "cls_id"):
            v = getattr(self, name)
            cb.require(v is None or 0 <= v < self.vocab_size, f"{name}={v} outside the vocabulary")

    @property
    def never_masked_ids(self) -> tuple[int, ...]:
        ids = {self.pad_id, self.mask_id, *self.special_ids}
        if self.cls_id is not None:
            ids.add(self.cls_id)
        return tuple(sorted(ids))


@dataclass(kw_only=True)
class TextMaskConfig(cb.MaskConfig):
    """BERT masking: 15% of real tokens, of which 80% <mask> / 10% random / 10% unchanged."""

    modality: ClassVar[str] = "text"
    mask_prob: float = 0.15
    random_token_prob: float = 0.1
    leave_unmasked_prob: float = 0.1

    def __post_init__(self) -> None:
        # the two shares split the masked tokens; above 1 the mask silently changes meaning
        cb.require(self.random_token_prob + self.leave_unmasked_prob <= 1.0, "random+unmasked > 1")


@dataclass(kw_only=True)
class TextData2VecConfig(cb.Data2VecConfig):
    modality: ClassVar[str] = "text"
    mask: TextMaskConfig = field(default_factory=TextMaskConfig)
    top_k: int = 3  # spec §2: K = 10 of 12
    tap: cb.Tap = "ffn"
    target_layer_norm: cb.TargetNorm = "layer"  # spec §1.2: LN over channels per token
    target_final_norm: cb.TargetNorm = "none"
    head_layers: int = 2  # spec §1.3: Linear(D,2D)-GELU-Linear(2D,D)
    loss_beta: float = 4.0
    loss_scale: float | None = 1.0
    ema_decay: float = 0.999
    ema_end_decay: float = 0.9999
    ema_anneal_end_step: int = 100_000  # P1 (FS base.yaml uses 300,000)
    ema_ref_steps: int = 1_000_000


@dataclass(kw_only=True)
class TextMask2Config(cb.MaskConfig):
    """v2 text (spec §3): exactly round(mask_prob·n) of the n maskable real tokens per row,
    single tokens (FS mask_length 1); padding and special ids are never masked."""

    modality: ClassVar[str] = "text"
    mask_prob: float = 0.48


@dataclass(kw_only=True)
class TextDecoderConfig(cb.DecoderConfig):
    modality: ClassVar[str] = "text"  # FS Base: 1-D, kernel 9, groups 1, 5 layers, NO residual
    kernel: int = 9
    groups: int = 1
    residual: bool = False
    input_dropout: float = 0.1
    projection_layers: int = 2  # Linear(768, 1536)-GELU-Linear(1536, 768)


@dataclass(kw_only=True)
class TextData2Vec2Config(cb.Data2Vec2Config):
    modality: ClassVar[str] = "text"
    mask: TextMask2Config = field(default_factory=TextMask2Config)
    decoder: TextDecoderConfig = field(default_factory=TextDecoderConfig)
    target_final_norm: cb.TargetNorm = "none"  # spec §1.2: IN (changed from v1's LN) -> AVG
    loss_scale: float | None = 1.0  # spec §1.3: text sums over D, scale 1
    ema_decay: float = 0.9999  # spec §2 table, text v2 Base
    ema_end_decay: float = 0.99999
    ema_anneal_end_step: int = 100_000
    ema_ref_steps: int = 1_000_000


@dataclass(kw_only=True)
class TextReconConfig(cb.ReconConfig):
    modality: ClassVar[str] = "text"
    mask: TextMaskConfig = field(default_factory=TextMaskConfig)


# ---------------------------------------------------------------- encoder (spec §4)
class TextEncoder(Encoder):
    """Token embedding + learned positions + embedding LayerNorm + dropout (spec §4).

    All L positions are tokens (a CLS id in the input stays a token; ``cls`` is None).
    Masking puts the <mask> embedding in place.
    """

    modality = "text"

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

    def mask_embedding(self) -> Tensor:
        return self.frontend.weight[self.cfg.mask_id]  # the <mask> token's embedding

    def embed_positions(self, feat: Tensor) -> Tensor:
        h = self.embed_norm(feat + self.pos_embed[: feat.shape[1]])
        return F.dropout(h, self.cfg.dropout, self.training)

    def num_tokens(self, input_len: int | None = None) -> int:
        return input_len or self.cfg.seq_len

    def flops_per_sample(self, input_len: int | None = None) -> dict[str, int]:
        t = self.num_tokens(input_len)
        return {"frontend": 0, "transformer": self.transformer.flops_per_sample(t)}


# ---------------------------------------------------------------- the modality
class TextModality(Modality):
    """Teacher (spec §2): v1 and v2 (FS ema_encoder_only) copy the token embeddings,
    positions and embedding LayerNorm from the student and average the blocks."""

    name = "text"
    encoder_class = TextEncoder
    encoder_config = TextEncoderConfig
    mask_config = TextMaskConfig
    data2vec_config = TextData2VecConfig
    mask2_config = TextMask2Config
    decoder_config = TextDecoderConfig
    data2vec2_config = TextData2Vec2Config
    recon_config = TextReconConfig
    v1_teacher_copies = ("frontend.", "pos_embed", "embed_norm.")
    v2_teacher_copies = ("frontend.", "pos_embed", "embed_norm.")

    def check_inputs(self, encoder: Encoder, x: Tensor) -> None:
        """Token ids must lie in the vocabulary (spec §4: ids come from the tokenizer)."""
        vocab = encoder.cfg.vocab_size
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi >= vocab:
            row = int(((x < 0) | (x >= vocab)).any(1).nonzero()[0])
            raise ValueError(
                f"token id out of range [0, {vocab}) in data row {row} (min {lo}, max {hi})"
            )

    def v1_mask(
        self,
        encoder: Encoder,
        batch: Batch,
        cfg: cb.MaskConfig,
        generator: torch.Generator | None,
        scored: str = "masked",
    ) -> MaskedBatch:
        """Spec §3: BERT 80/10/10 on the ids (the student gets corrupted ids, no feature mask);
        padding and special ids are never selected."""
        ec = encoder.cfg
        tm = bert_mask(
            batch["x"],
            batch.get("attention_mask"),
            cfg,
            mask_id=ec.mask_id,
            vocab_size=ec.vocab_size,
            never_mask=ec.never_masked_ids,
            generator=generator,
        )
        return MaskedBatch(tm.input_ids, None, tm.masked if scored == "masked" else tm.selected)

    def v2_mask(
        self,
        encoder: Encoder,
        batch: Batch,
        cfg: cb.MaskConfig,
        clones: int,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Spec §3 v2: exactly round(p·n) single tokens per clone row; padding never masked."""
        x, am = batch["x"], batch.get("attention_mask")
        return random_token_mask(
            x.repeat_interleave(clones, 0),
            None if am is None else am.repeat_interleave(clones, 0),
            cfg,
            never_mask=encoder.cfg.never_masked_ids,
            generator=generator,
        )

    def recon_head(self, encoder: Encoder) -> nn.Module:
        """Spec §10.2: the BERT LM head, Linear-GELU-LayerNorm-Linear to the vocabulary."""
        d, v = encoder.dim, encoder.cfg.vocab_size
        return nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d), nn.Linear(d, v))

    def recon_targets(self, encoder: Encoder, x: Tensor, norm_target: bool) -> Tensor:
        """Spec §10.2: the original token ids (B, L); nothing to normalise."""
        return x

    def recon_loss(
        self,
        encoder: Encoder,
        pred: Tensor,
        x: Tensor,
        scored: Tensor,
        norm_target: bool,
        denominator: int | None = None,
    ) -> tuple[Tensor, dict[str, Any]]:
        """Spec §10.2 (BERT): cross-entropy of the logits against the original ids, the mean
        over scored tokens. ``denominator`` (data parallelism): the global scored count; loss
        and accuracy are then this rank's sums over it."""
        labels = self.recon_targets(encoder, x, norm_target)[scored]
        if denominator is not None:
            if denominator == 0:
                return pred.sum() * 0.0, {"accuracy": float("nan")}  # as on every rank
            loss = F.cross_entropy(pred.float(), labels, reduction="sum") / denominator
            correct = float((pred.argmax(-1) == labels).sum())
            return loss, {"accuracy": correct / denominator}
        loss = F.cross_entropy(pred.float(), labels)
        return loss, {"accuracy": float((pred.argmax(-1) == labels).float().mean())}
