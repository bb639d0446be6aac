"""Pretraining models: data2vec v1 (spec §1) and the masked-reconstruction baseline (§10.2);
data2vec 2.0 (spec §5) lives in :mod:`.data2vec2` and is built here too.

All expose the interface the training loop uses:
``training_loss(batch, generator) -> (loss, stats)``, ``after_optimizer_step(step)``,
``named_trainable_parameters()``, ``ema_decay_at(step)``, ``encoder`` (the student).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import (
    Data2Vec2Config,
    Data2VecConfig,
    EncoderConfig,
    MaskConfig,
    ReconConfig,
    default_method_config,
)
from .ema import EMATeacher, ema_decay_at
from .encoders import (
    Encoder,
    EncoderOutput,
    ImageEncoder,
    SpeechEncoder,
    TextEncoder,
    build_encoder,
)
from .masking import bert_mask, block_mask, span_mask
from .targets import masked_std, top_k_targets


@dataclass
class MaskedBatch:
    student_x: Tensor  # input for the student (text: corrupted ids)
    mask: Tensor | None  # (B, T) feature-level mask (images, speech); None for text
    scored: Tensor  # (B, T) positions that enter the loss


class PretrainModel(nn.Module):
    """Shared plumbing: masks per modality and the trainable-parameter view."""

    method = ""
    monitors_collapse = False

    def __init__(self, encoder: Encoder, mask_cfg: MaskConfig) -> None:
        super().__init__()
        if mask_cfg.modality != encoder.modality:
            raise ValueError(f"{mask_cfg.modality} mask config for a {encoder.modality} encoder")
        self.encoder = encoder
        self.mask_cfg = mask_cfg

    @property
    def modality(self) -> str:
        return self.encoder.modality

    def named_trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Student + head parameters (the EMA teacher is excluded: requires_grad False)."""
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    def make_mask(
        self, batch: dict[str, Tensor], generator: torch.Generator | None, scored: str = "masked"
    ) -> MaskedBatch:
        """Draw this batch's mask (spec §3). Text ``scored``: "masked" = positions now <mask>
        (data2vec v1), "selected" = all 15% (BERT)."""
        x = batch["x"]
        enc = self.encoder
        if isinstance(enc, ImageEncoder):
            m = block_mask(x.shape[0], enc.cfg.grid, self.mask_cfg, generator).to(x.device)
            return MaskedBatch(x, m, m)
        if isinstance(enc, SpeechEncoder):
            t = enc.num_tokens(x.shape[1])
            m = span_mask(x.shape[0], t, self.mask_cfg, generator).to(x.device)
            return MaskedBatch(x, m, m)
        cfg = enc.cfg
        tm = bert_mask(
            x,
            batch.get("attention_mask"),
            self.mask_cfg,
            mask_id=cfg.mask_id,
            vocab_size=cfg.vocab_size,
            never_mask=cfg.never_masked_ids,
            generator=generator,
        )
        return MaskedBatch(tm.input_ids, None, tm.masked if scored == "masked" else tm.selected)

    def ema_decay_at(self, step: int) -> float | None:
        return None

    def after_optimizer_step(self, step: int) -> None:
        """Hook after optimiser step ``step`` (0-based); no-op without a teacher."""

    def training_loss(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def _head_flops_per_token(self) -> int:
        linears = (m for m in self.head.modules() if isinstance(m, nn.Linear))
        return sum(2 * m.in_features * m.out_features for m in linears)

    def _scored_fraction(self) -> float:
        p = self.mask_cfg.mask_prob
        if self.modality == "speech":
            return min(1.0, 0.8 * p)  # spans overlap: 0.65/10 covers ~50% (spec §3)
        return p


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


class TeacherModel(PretrainModel):
    """A student with an EMA teacher (spec §2): the part data2vec v1 and 2.0 share.

    The teacher is a frozen copy of the student without the mask embedding (and without a
    front-end the student shares, speech); ``copied`` parameter prefixes are copied from the
    student each update, all others averaged with the method's τ schedule.
    """

    monitors_collapse = True

    def __init__(
        self, encoder: Encoder, cfg: Data2VecConfig | Data2Vec2Config, copied: tuple[str, ...]
    ) -> None:
        super().__init__(encoder, cfg.mask)
        if cfg.modality != encoder.modality:
            raise ValueError(
                f"{cfg.modality} {self.method} config for a {encoder.modality} encoder"
            )
        self.cfg = cfg
        dropped = ["mask_emb"] + (["frontend"] if encoder.teacher_shares_frontend else [])
        self.teacher = EMATeacher(encoder, copied=copied, dropped=dropped)
        self.teacher.model.tap = cfg.tap

    def ema_decay_at(self, step: int) -> float:
        c = self.cfg
        return ema_decay_at(step, c.ema_decay, c.ema_end_decay, c.ema_anneal_end_step)

    def after_optimizer_step(self, step: int) -> None:
        """Spec §1 step 6: EMA update after optimiser step ``step`` (0-based update count)."""
        self.teacher.update(self.encoder, self.ema_decay_at(step))

    @torch.no_grad()
    def teacher_output(
        self, x: Tensor, attention_mask: Tensor | None = None, feat: Tensor | None = None
    ) -> EncoderOutput:
        """The teacher's pass over the UNMASKED input, with every tapped layer (spec §1 step
        3). With a shared front-end (speech) ``feat`` is the student's pre-mask features."""
        teacher = self.teacher.model
        if self.encoder.teacher_shares_frontend:
            if feat is None:
                feat, _ = self.encoder.embed(x, attention_mask)
            return teacher.contextualize(feat, None, None, return_layers=True)
        return teacher(x, attention_mask, None, return_layers=True)


class Data2Vec(TeacherModel):
    """data2vec v1: student encoder + regression head + EMA teacher (spec §1, §2)."""

    method = "data2vec"

    def __init__(self, encoder: Encoder, cfg: Data2VecConfig) -> None:
        super().__init__(encoder, cfg, copied=encoder.teacher_copies)
        if cfg.top_k > encoder.depth:
            raise ValueError(f"top_k={cfg.top_k} exceeds encoder depth {encoder.depth}")
        self.head = _regression_head(encoder.dim, cfg.head_layers)

    @torch.no_grad()
    def compute_targets(
        self, x: Tensor, attention_mask: Tensor | None = None, feat: Tensor | None = None
    ) -> Tensor:
        """(B, T, D) fp32 targets from the teacher on the UNMASKED input (spec §1 step 3-4)."""
        out = self.teacher_output(x, attention_mask, feat)
        c = self.cfg
        return top_k_targets(out.layers, c.top_k, c.target_layer_norm, c.target_final_norm)

    def forward_parts(self, batch: dict[str, Tensor], masked: MaskedBatch) -> tuple[Tensor, Tensor]:
        """(student final tokens (B, T, D), targets (B, T, D))."""
        am = batch.get("attention_mask")
        feat, padding_mask = self.encoder.embed(masked.student_x, am)
        student = self.encoder.contextualize(feat, padding_mask, masked.mask).tokens
        shared = feat if self.encoder.teacher_shares_frontend else None
        return student, self.compute_targets(batch["x"], am, shared)

    def loss_from_outputs(
        self, student: Tensor, targets: Tensor, scored: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """Regression loss on scored (masked) positions only (spec §1.3)."""
        c = self.cfg
        pred = self.head(student[scored])  # head only on masked tokens: [N_masked, D]
        y = targets[scored]
        if pred.shape[0] == 0:  # no masked token in the batch: nothing to learn
            return student.sum() * 0.0, {"target_std": math.nan, "pred_std": math.nan}
        if c.loss_beta == 0:
            err = F.mse_loss(pred.float(), y, reduction="none")
        else:
            err = F.smooth_l1_loss(pred.float(), y, reduction="none", beta=c.loss_beta)
        per_token = err.sum(-1) if c.loss_reduce == "sum" else err.mean(-1)
        scale = 1.0 / math.sqrt(pred.shape[-1]) if c.loss_scale is None else c.loss_scale
        loss = per_token.mean() * scale
        stats = {"target_std": float(masked_std(y)), "pred_std": float(masked_std(pred))}
        return loss, stats

    def training_loss(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        masked = self.make_mask(batch, generator, scored="masked")
        student, targets = self.forward_parts(batch, masked)
        return self.loss_from_outputs(student, targets, masked.scored)

    def flops_per_step(self, batch_size: int, input_len: int | None = None) -> int:
        """nanoGPT-style model FLOPs: 3× student forward (fwd + bwd) + 1× teacher forward."""
        f = self.encoder.flops_per_sample(input_len)
        student = sum(f.values())
        teacher = student - (f["frontend"] if self.encoder.teacher_shares_frontend else 0)
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
        d = encoder.dim
        if isinstance(encoder, ImageEncoder):
            ec = encoder.cfg
            self.head = nn.Linear(d, ec.in_channels * ec.patch_size**2)
        elif isinstance(encoder, SpeechEncoder):
            self.frame_len, self.hop = encoder.cfg.receptive_field()
            self.head = nn.Linear(d, self.frame_len)
        elif isinstance(encoder, TextEncoder):  # BERT LM head
            v = encoder.cfg.vocab_size
            self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d), nn.Linear(d, v))
        else:
            raise TypeError(f"unsupported encoder {type(encoder).__name__}")

    def reconstruction_targets(self, x: Tensor) -> Tensor:
        """(B, T, P) patches or waveform frames, normalised per patch/frame if configured."""
        enc = self.encoder
        if isinstance(enc, ImageEncoder):
            p = enc.cfg.patch_size
            b, c, h, w = x.shape
            t = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
            t = t.reshape(b, (h // p) * (w // p), p * p * c)
        else:
            n = enc.num_tokens(x.shape[1])
            t = x.unfold(1, self.frame_len, self.hop)
            if t.shape[1] < n:
                raise ValueError(f"{t.shape[1]} waveform frames for {n} conv frames")
            t = t[:, :n]
        if self.cfg.norm_target:  # MAE / FS v2 recon_loss: per patch mean and variance
            t = (t - t.mean(-1, keepdim=True)) / torch.sqrt(t.var(-1, keepdim=True) + 1e-6)
        return t

    def training_loss(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        x = batch["x"]
        masked = self.make_mask(batch, generator, scored="selected")
        out = self.encoder(masked.student_x, batch.get("attention_mask"), mask=masked.mask)
        h = out.tokens[masked.scored]
        if h.shape[0] == 0:
            return out.tokens.sum() * 0.0, {"target_std": math.nan, "pred_std": math.nan}
        pred = self.head(h)
        if isinstance(self.encoder, TextEncoder):
            labels = x[masked.scored]
            loss = F.cross_entropy(pred.float(), labels)
            acc = float((pred.argmax(-1) == labels).float().mean())
            return loss, {"accuracy": acc}
        y = self.reconstruction_targets(x)[masked.scored]
        loss = F.mse_loss(pred.float(), y)
        return loss, {"target_std": float(masked_std(y)), "pred_std": float(masked_std(pred))}

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
    from .data2vec2 import Data2Vec2  # imports this module (PretrainModel): import here

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
