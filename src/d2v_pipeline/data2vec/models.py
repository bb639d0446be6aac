"""Pretraining models: data2vec v1 (spec §1) and the masked-reconstruction baseline (§10.2),
and :func:`build_pretrain_model` for every method (data2vec 2.0, spec §5, is in
:mod:`.data2vec2`; the shared student/teacher plumbing in :mod:`.model_base`).

All expose the interface the training loop uses:
``training_loss(batch, generator) -> (loss, stats)``, ``after_optimizer_step(step)``,
``named_trainable_parameters()``, ``ema_decay_at(step)``, ``encoder`` (the student).
What differs per modality (masks, reconstruction head and target, teacher policy) is asked of
the encoder's registered modality (``self.modality_ops``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import default_method_config
from .config_base import Data2Vec2Config, Data2VecConfig, EncoderConfig, ReconConfig
from .data2vec2 import Data2Vec2
from .encoder_base import Encoder
from .encoders import build_encoder
from .masking import MaskedBatch
from .model_base import PretrainModel, Shard, TeacherModel, fp32_targets, zero_loss
from .targets import masked_std, std_moments, top_k_targets


def _regression_head(dim: int, layers: int) -> nn.Module:
    """Spec §1.3: Linear(D, D); text: Linear(D, 2D)-GELU-Linear(2D, D) (head_layers 2)."""
    mods: list[nn.Module] = []
    cur = dim
    for i in range(layers - 1):
        nxt = 2 * dim if i == 0 else cur
        mods += [nn.Linear(cur, nxt), nn.GELU()]
        cur = nxt
    mods.append(nn.Linear(cur, dim))
    return nn.Sequential(*mods)


class Data2Vec(TeacherModel):
    """data2vec v1: student encoder + regression head + EMA teacher (spec §1, §2)."""

    method = "data2vec"

    def __init__(self, encoder: Encoder, cfg: Data2VecConfig) -> None:
        super().__init__(encoder, cfg)
        if cfg.top_k > encoder.depth:
            raise ValueError(f"top_k={cfg.top_k} exceeds encoder depth {encoder.depth}")
        self.head = _regression_head(encoder.dim, cfg.head_layers)

    @torch.no_grad()
    def compute_targets(
        self, x: Tensor, attention_mask: Tensor | None = None, feat: Tensor | None = None
    ) -> Tensor:
        """(B, T, D) fp32 targets from the teacher on the UNMASKED input (spec §1 step 3-4);
        fp32 under mixed precision too (autocast is switched off here)."""
        with fp32_targets(x.device.type):
            out = self.teacher_output(x, attention_mask, feat)
            c = self.cfg
            return top_k_targets(out.layers, c.top_k, c.target_layer_norm, c.target_final_norm)

    def forward_parts(self, batch: dict[str, Tensor], masked: MaskedBatch) -> tuple[Tensor, Tensor]:
        """(student final tokens (B, T, D), targets (B, T, D))."""
        am = batch.get("attention_mask")
        feat, padding_mask = self.encoder.embed(masked.student_x, am)
        student = self.encoder.contextualize(feat, padding_mask, masked.mask).tokens
        shared = feat if self.modality_ops.teacher_shares_frontend else None
        return student, self.compute_targets(batch["x"], am, shared)

    def loss_from_outputs(
        self, student: Tensor, targets: Tensor, scored: Tensor, denominator: int | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
        """Regression loss on scored (masked) positions only (spec §1.3): the mean over the
        scored tokens. ``denominator`` (data parallelism): the global scored count; the loss
        is then this rank's sum over that count, and the stats are summable over ranks."""
        pred = self.head(student[scored])  # head only on masked tokens: [N_masked, D]
        y = targets[scored]
        if denominator is not None:
            return self._shard_loss(student, pred, y, denominator)
        if pred.shape[0] == 0:  # no masked token in the batch: nothing to learn
            return student.sum() * 0.0, {"target_std": math.nan, "pred_std": math.nan}
        per_token, scale = self._per_token_loss(pred, y)
        loss = per_token.mean() * scale
        stats = {"target_std": float(masked_std(y)), "pred_std": float(masked_std(pred))}
        return loss, stats

    def _shard_loss(
        self, student: Tensor, pred: Tensor, y: Tensor, denominator: int
    ) -> tuple[Tensor, dict[str, Any]]:
        """This rank's part of :meth:`loss_from_outputs`: Σ_local per-token loss / global count
        (no early return on an empty shard: every rank must report the same stats)."""
        stats = {"target_std": std_moments(y), "pred_std": std_moments(pred)}
        if denominator == 0:  # no masked token in the global batch: nothing to learn
            return zero_loss(student), stats
        per_token, scale = self._per_token_loss(pred, y)
        return per_token.sum() / denominator * scale, stats

    def _per_token_loss(self, pred: Tensor, y: Tensor) -> tuple[Tensor, float]:
        """(N,) regression loss of each scored token in fp32 (L2 or smooth L1, summed or
        averaged over D) and the scale applied after the reduction over tokens (spec §1.3)."""
        c = self.cfg
        if c.loss_beta == 0:
            err = F.mse_loss(pred.float(), y, reduction="none")
        else:
            err = F.smooth_l1_loss(pred.float(), y, reduction="none", beta=c.loss_beta)
        per_token = err.sum(-1) if c.loss_reduce == "sum" else err.mean(-1)
        scale = 1.0 / math.sqrt(pred.shape[-1]) if c.loss_scale is None else c.loss_scale
        return per_token, scale

    def training_loss(
        self,
        batch: dict[str, Tensor],
        generator: torch.Generator | None = None,
        shard: Shard | None = None,
    ) -> tuple[Tensor, dict[str, Any]]:
        if shard is None:
            masked = self.make_mask(batch, generator, scored="masked")
            student, targets = self.forward_parts(batch, masked)
            return self.loss_from_outputs(student, targets, masked.scored)
        masked, count = self.make_shard_mask(shard, generator, scored="masked")
        student, targets = self.forward_parts(batch, masked)
        return self.loss_from_outputs(student, targets, masked.scored, denominator=count)

    def flops_per_step(self, batch_size: int, input_len: int | None = None) -> int:
        """nanoGPT-style model FLOPs: 3× student forward (fwd + bwd) + 1× teacher forward."""
        f = self.encoder.flops_per_sample(input_len)
        student = sum(f.values())
        teacher = student - (f["frontend"] if self.modality_ops.teacher_shares_frontend else 0)
        head = self._head_flops_per_token() * self.encoder.num_tokens(input_len)
        head = round(head * self._scored_fraction())
        return batch_size * (3 * (student + head) + teacher)


class MaskedReconstruction(PretrainModel):
    """Same encoder and masks, predicting the input (spec §10.2): images MAE per-patch
    normalised pixels; speech per-frame normalised waveform samples each conv frame covers
    (torchaudio is not available for log-mel); text BERT cross-entropy (15%, 80/10/10)."""

    method = "masked_recon"

    def __init__(self, encoder: Encoder, cfg: ReconConfig) -> None:
        super().__init__(encoder, cfg.mask)
        self.cfg = cfg
        self.head = self.modality_ops.recon_head(encoder)

    def reconstruction_targets(self, x: Tensor) -> Tensor:
        """The modality's targets for input ``x``: (B, T, P) patches or waveform frames,
        normalised per patch/frame if configured; text: the token ids."""
        return self.modality_ops.recon_targets(self.encoder, x, self.cfg.norm_target)

    def training_loss(
        self,
        batch: dict[str, Tensor],
        generator: torch.Generator | None = None,
        shard: Shard | None = None,
    ) -> tuple[Tensor, dict[str, Any]]:
        x = batch["x"]
        if shard is None:
            masked, count = self.make_mask(batch, generator, scored="selected"), None
        else:
            masked, count = self.make_shard_mask(shard, generator, scored="selected")
        out = self.encoder(masked.student_x, batch.get("attention_mask"), mask=masked.mask)
        h = out.tokens[masked.scored]
        if h.shape[0] == 0 and shard is None:
            return out.tokens.sum() * 0.0, {"target_std": math.nan, "pred_std": math.nan}
        pred = self.head(h)
        return self.modality_ops.recon_loss(
            self.encoder, pred, x, masked.scored, self.cfg.norm_target, denominator=count
        )

    def flops_per_step(self, batch_size: int, input_len: int | None = None) -> int:
        """nanoGPT-style model FLOPs: 3× encoder + head forward (fwd + bwd)."""
        f = sum(self.encoder.flops_per_sample(input_len).values())
        head = self._head_flops_per_token() * self.encoder.num_tokens(input_len)
        return batch_size * 3 * (f + round(head * self._scored_fraction()))


def build_pretrain_model(
    method: str,
    encoder_cfg: EncoderConfig,
    method_cfg: Data2VecConfig | Data2Vec2Config | ReconConfig | None = None,
    seed: int = 0,
) -> PretrainModel:
    """A pretraining model for ``method`` in {"data2vec", "data2vec2", "masked_recon"},
    initialised from ``seed`` without touching the global RNG. ``method_cfg`` None = the spec
    defaults. ("scratch" means no pretraining and has no model here.)"""
    if method_cfg is None:
        method_cfg = default_method_config(method, encoder_cfg.modality)
    if method_cfg.modality != encoder_cfg.modality:
        raise ValueError(
            f"{method} config is for {method_cfg.modality!r}, encoder for {encoder_cfg.modality!r}"
        )
    kinds = {
        "data2vec": (Data2Vec, Data2VecConfig),
        "data2vec2": (Data2Vec2, Data2Vec2Config),
        "masked_recon": (MaskedReconstruction, ReconConfig),
    }
    if method not in kinds:
        raise ValueError(f"unknown pretraining method {method!r}; expected one of {list(kinds)}")
    cls, cfg_cls = kinds[method]
    if not isinstance(method_cfg, cfg_cls):
        raise TypeError(f"{method} needs a {cfg_cls.__name__}, got {type(method_cfg).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(build_encoder(encoder_cfg), method_cfg)


def model_flops_per_step(
    model: PretrainModel, batch_size: int, input_len: int | None = None
) -> int:
    """Estimated matmul FLOPs of one training step (for MFU = flops / time / peak)."""
    return model.flops_per_step(batch_size, input_len)


__all__ = [
    "Data2Vec",
    "Data2Vec2",
    "MaskedBatch",
    "MaskedReconstruction",
    "PretrainModel",
    "TeacherModel",
    "build_pretrain_model",
    "model_flops_per_step",
]
