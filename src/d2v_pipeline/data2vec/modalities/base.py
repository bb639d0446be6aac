"""The interface a modality implements: everything in which one modality differs.

After fairseq data2vec 2.0 (``models/modalities/{base,images,audio,text}.py``: one module per
modality behind one small interface), in our own, smaller way. A modality file defines its
config dataclasses (the spec defaults), its encoder front-end and one subclass of
:class:`Modality`; the registry (:mod:`d2v_pipeline.data2vec.modalities`) maps its name to
an instance. The v1 model, data2vec 2.0, masked reconstruction, the from-dict builders and
the training loop ask that object; none of them tests an encoder's type.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import config_base as cb  # the modality-neutral config bases
from ..encoder_base import Encoder
from ..masking import MaskedBatch
from ..targets import masked_std, std_moments

Batch = dict[str, Tensor]  # {"x", optional "attention_mask"}


class Modality(ABC):
    """One modality: configs and defaults, front-end, masks, teacher policy, decoder
    geometry and masked-reconstruction target. Instances are stateless."""

    name: ClassVar[str]
    encoder_class: ClassVar[type[Encoder]]
    # config classes; their field defaults are the modality's spec settings (§1-§5)
    encoder_config: ClassVar[type[cb.EncoderConfig]]
    mask_config: ClassVar[type[cb.MaskConfig]]  # data2vec v1 and masked_recon
    data2vec_config: ClassVar[type[cb.Data2VecConfig]]
    mask2_config: ClassVar[type[cb.MaskConfig]]  # data2vec 2.0
    decoder_config: ClassVar[type[cb.DecoderConfig]]
    data2vec2_config: ClassVar[type[cb.Data2Vec2Config]]
    recon_config: ClassVar[type[cb.ReconConfig]]
    # spec §2: encoder parameter prefixes the EMA teacher COPIES from the student after each
    # step (everything else it owns is averaged), per method
    v1_teacher_copies: ClassVar[tuple[str, ...]] = ()
    v2_teacher_copies: ClassVar[tuple[str, ...]] = ()
    # spec §2: the teacher consumes the student's front-end output (speech conv features)
    teacher_shares_frontend: ClassVar[bool] = False
    cls_tokens: ClassVar[int] = 0  # tokens the encoder prepends (image CLS), for FLOPs

    # ------------------------------------------------------------ front-end (spec §4)
    def build_encoder(self, cfg: cb.EncoderConfig) -> Encoder:
        """The modality's encoder for ``cfg`` (spec §4 front-end + shared transformer)."""
        if cfg.modality != self.name:
            raise ValueError(f"{cfg.modality} encoder config given to the {self.name} modality")
        return self.encoder_class(cfg)

    def check_inputs(self, encoder: Encoder, x: Tensor) -> None:
        """Reject pretraining data the encoder cannot take (spec §4 input formats)."""
        if not x.is_floating_point():
            raise ValueError(f"{self.name} data 'x' must be float, got {x.dtype}")

    def input_len(self, x: Tensor) -> int | None:
        """Input length that sets the token count (for FLOPs), None if the config fixes it."""
        return None

    # ------------------------------------------------------------ teacher (spec §2)
    def teacher_copies(self, method: str) -> tuple[str, ...]:
        """Spec §2: parameter prefixes the teacher copies instead of averaging, for
        ``method`` "data2vec" (v1) or "data2vec2" (v2 differs for speech)."""
        return self.v2_teacher_copies if method == "data2vec2" else self.v1_teacher_copies

    def teacher_drops(self) -> list[str]:
        """Spec §2: encoder parts the teacher never uses (the mask embedding; a shared
        front-end), removed from its copy."""
        return ["mask_emb"] + (["frontend"] if self.teacher_shares_frontend else [])

    # ------------------------------------------------------------ masks (spec §3)
    @abstractmethod
    def v1_mask(
        self,
        encoder: Encoder,
        batch: Batch,
        cfg: cb.MaskConfig,
        generator: torch.Generator | None,
        scored: str = "masked",
    ) -> MaskedBatch:
        """Spec §3 (v1 and masked reconstruction): this batch's mask. Text ``scored``:
        "masked" = positions now <mask> (data2vec v1), "selected" = all chosen (BERT)."""

    def scored_fraction(self, mask_prob: float) -> float:
        """Expected fraction of scored tokens at ``mask_prob`` (spec §3), for FLOPs."""
        return mask_prob

    @abstractmethod
    def v2_mask(
        self,
        encoder: Encoder,
        batch: Batch,
        cfg: cb.MaskConfig,
        clones: int,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Spec §3 v2 / §5 item 2: (B·clones, T) bool, True = masked, one independent mask
        per clone (rows b·M .. b·M+M-1 are the clones of sample b), the same number of
        visible tokens per row where the modality needs a dense gather."""

    # ------------------------------------------------------------ data2vec 2.0 decoder (§5)
    def decoder_grid(self, encoder: Encoder) -> tuple[int, int] | None:
        """Spec §5 item 4: the (H, W) grid of a 2-D conv decoder, None for a 1-D one."""
        return None

    # ------------------------------------------------------------ masked reconstruction (§10.2)
    @abstractmethod
    def recon_head(self, encoder: Encoder) -> nn.Module:
        """Spec §10.2: the head from final tokens (D) to the reconstruction target."""

    @abstractmethod
    def recon_targets(self, encoder: Encoder, x: Tensor, norm_target: bool) -> Tensor:
        """Spec §10.2: (B, T, ...) per-token reconstruction targets of input ``x``."""

    def recon_loss(
        self,
        encoder: Encoder,
        pred: Tensor,
        x: Tensor,
        scored: Tensor,
        norm_target: bool,
        denominator: int | None = None,
    ) -> tuple[Tensor, dict[str, Any]]:
        """Spec §10.2 regression: MSE between ``pred`` (N_scored, P) and the targets at the
        ``scored`` positions. ``denominator`` (data parallelism): the global scored count;
        the loss is then this rank's squared-error sum over (count · P), and the stats are
        summable over ranks."""
        y = self.recon_targets(encoder, x, norm_target)[scored]
        if denominator is not None:
            stats = {"target_std": std_moments(y), "pred_std": std_moments(pred)}
            if denominator == 0:
                return pred.sum() * 0.0, stats
            loss = F.mse_loss(pred.float(), y, reduction="sum") / (denominator * y.shape[-1])
            return loss, stats
        loss = F.mse_loss(pred.float(), y)
        return loss, {"target_std": float(masked_std(y)), "pred_std": float(masked_std(pred))}


def normalize_per_token(t: Tensor, norm_target: bool) -> Tensor:
    """MAE / FS v2 ``recon_loss`` targets: mean and variance normalised per patch or frame."""
    if not norm_target:
        return t
    return (t - t.mean(-1, keepdim=True)) / torch.sqrt(t.var(-1, keepdim=True) + 1e-6)
