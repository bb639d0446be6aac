"""What every pretraining method shares: the model interface the training loop uses and the
EMA teacher of data2vec v1 and 2.0 (spec §2). Modality differences come from the registered
:class:`~.modalities.base.Modality` of the encoder (``self.modality_ops``).

The interface: ``training_loss(batch, generator) -> (loss, stats)``,
``after_optimizer_step(step)``, ``named_trainable_parameters()``, ``ema_decay_at(step)``,
``flops_per_step(batch_size, input_len)``, ``encoder`` (the student).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from .config_base import Data2Vec2Config, Data2VecConfig, MaskConfig
from .ema import EMATeacher, ema_decay_at
from .encoder_base import Encoder, EncoderOutput
from .masking import MaskedBatch
from .modalities import get_modality


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

    def ema_decay_at(self, step: int) -> float | None:
        return None

    def after_optimizer_step(self, step: int) -> None:
        """Hook after optimiser step ``step`` (0-based); no-op without a teacher."""

    def training_loss(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, float]]:
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
        3). With a shared front-end (speech) ``feat`` is the student's pre-mask features."""
        teacher = self.teacher.model
        if self.modality_ops.teacher_shares_frontend:
            if feat is None:
                feat, _ = self.encoder.embed(x, attention_mask)
            return teacher.contextualize(feat, None, None, return_layers=True)
        return teacher(x, attention_mask, None, return_layers=True)
