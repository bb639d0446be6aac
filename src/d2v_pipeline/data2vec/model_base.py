"""What every pretraining method shares: the model interface the training loop uses and the
EMA teacher of data2vec v1 and 2.0 (spec §2). Modality differences come from the registered
:class:`~.modalities.base.Modality` of the encoder (``self.modality_ops``).

The interface: ``training_loss(batch, generator, shard=None) -> (loss, stats)``,
``after_optimizer_step(step)``, ``named_trainable_parameters()``, ``ema_decay_at(step)``,
``flops_per_step(batch_size, input_len)``, ``encoder`` (the student).

Data parallelism (:class:`Shard`): a rank trains on some rows of the global batch, but draws
every random quantity (masks, decoder noise) for the whole global batch, exactly as one
process would, and keeps its rows; its loss is its rows' sum divided by the GLOBAL count, so
the gradients summed over ranks are the single-process gradient. Without a shard every method
runs the single-process code unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .config_base import Data2Vec2Config, Data2VecConfig, MaskConfig
from .ema import EMATeacher, ema_decay_at
from .encoder_base import Encoder, EncoderOutput
from .masking import MaskedBatch
from .modalities import get_modality


@dataclass(frozen=True)
class Shard:
    """This rank's part of a global batch under data parallelism.

    ``batch`` is the whole global batch (on the CPU, where masks are drawn), ``rows`` the
    rows this rank trains on (``runtime.shard_slice``), ``device`` where they go.
    """

    batch: dict[str, Tensor]
    rows: slice
    device: torch.device

    @property
    def global_size(self) -> int:
        return self.batch["x"].shape[0]

    def take(self, t: Tensor, per_row: int = 1) -> Tensor:
        """This rank's rows of a global (B·per_row, ...) tensor (e.g. ``per_row`` clones per
        sample, rows b·M .. b·M+M-1), on this rank's device."""
        return t[self.rows.start * per_row : self.rows.stop * per_row].to(self.device)


def zero_loss(like: Tensor) -> Tensor:
    """A zero loss connected to the graph (a batch with nothing to score)."""
    return like.sum() * 0.0


def fp32_targets(device_type: str) -> AbstractContextManager[Any]:
    """Autocast switched off for the teacher and its targets (spec: targets are computed in
    fp32). A no-op when autocast is not on, so an fp32 run executes exactly as before."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return nullcontext()


class PretrainModel(nn.Module):
    """Shared plumbing: the modality's masks and the trainable-parameter view."""

    method = ""
    monitors_collapse = False

    def __init__(self, encoder: Encoder, mask_cfg: MaskConfig) -> None:
        super().__init__()
        if mask_cfg.modality != encoder.modality:
            raise ValueError(f"{mask_cfg.modality} mask config for a {encoder.modality} encoder")
        self.encoder = encoder
        self.mask_cfg = mask_cfg
        self.modality_ops = get_modality(encoder.modality)

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
        return self.modality_ops.v1_mask(self.encoder, batch, self.mask_cfg, generator, scored)

    def make_shard_mask(
        self, shard: Shard, generator: torch.Generator | None, scored: str = "masked"
    ) -> tuple[MaskedBatch, int]:
        """The global batch's mask (the same draws as one process), this rank's rows of it,
        and the global number of scored positions (the loss denominator)."""
        full = self.make_mask(shard.batch, generator, scored)
        mine = MaskedBatch(
            shard.take(full.student_x),
            None if full.mask is None else shard.take(full.mask),
            shard.take(full.scored),
        )
        return mine, int(full.scored.sum())

    def ema_decay_at(self, step: int) -> float | None:
        return None

    def after_optimizer_step(self, step: int) -> None:
        """Hook after optimiser step ``step`` (0-based); no-op without a teacher."""

    def training_loss(
        self,
        batch: dict[str, Tensor],
        generator: torch.Generator | None = None,
        shard: Shard | None = None,
    ) -> tuple[Tensor, dict[str, Any]]:
        """(loss, stats) of ``batch``. With a ``shard`` (``batch`` = this rank's rows): the
        loss is this rank's part of the global loss, and every stat is summable over ranks:
        a float already divided by the global count, or :func:`~.targets.std_moments`."""
        raise NotImplementedError

    def flops_per_step(self, batch_size: int, input_len: int | None = None) -> int:
        raise NotImplementedError

    def _head_flops_per_token(self) -> int:
        linears = (m for m in self.head.modules() if isinstance(m, nn.Linear))
        return sum(2 * m.in_features * m.out_features for m in linears)

    def _scored_fraction(self) -> float:
        return self.modality_ops.scored_fraction(self.mask_cfg.mask_prob)


class TeacherModel(PretrainModel):
    """A student with an EMA teacher (spec §2): the part data2vec v1 and 2.0 share.

    The teacher is a frozen copy of the student without the mask embedding (and without a
    front-end the student shares, speech); the modality's ``teacher_copies(method)`` prefixes
    are copied from the student each update, all others averaged with the method's τ schedule.
    """

    monitors_collapse = True

    def __init__(self, encoder: Encoder, cfg: Data2VecConfig | Data2Vec2Config) -> None:
        super().__init__(encoder, cfg.mask)
        if cfg.modality != encoder.modality:
            raise ValueError(
                f"{cfg.modality} {self.method} config for a {encoder.modality} encoder"
            )
        self.cfg = cfg
        ops = self.modality_ops
        self.teacher = EMATeacher(
            encoder, copied=ops.teacher_copies(self.method), dropped=ops.teacher_drops()
        )
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
        3). With a shared front-end (speech) ``feat`` is the student's pre-mask features
        (under mixed precision cast to fp32 for the fp32 teacher; a no-op in fp32)."""
        teacher = self.teacher.model
        if self.modality_ops.teacher_shares_frontend:
            if feat is None:
                feat, _ = self.encoder.embed(x, attention_mask)
            return teacher.contextualize(feat.float(), None, None, return_layers=True)
        return teacher(x, attention_mask, None, return_layers=True)
