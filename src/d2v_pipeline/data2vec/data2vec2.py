"""data2vec 2.0 (spec §5): the v1 teacher and targets, made cheap.

One step: the front-end embeds each sample once; its features are cloned M times
(``clones``), each clone gets its own mask; the student (the ordinary :class:`Encoder`) adds
positions and runs the transformer on the VISIBLE tokens only (MAE-style gather, plus CLS for
images); the masked slots are filled with N(0, 0.01²) noise, restored to the original order
and completed by a light convolutional decoder; the EMA teacher encodes the unmasked sample
once and its targets are shared by the M clones; L2 at masked positions.

The EMA teacher, the schedule, the teacher pass and the targets are v1's code (inherited
from :class:`~.model_base.TeacherModel`, and ``top_k_targets``); only which encoder parts are
copied instead of averaged differs (spec §2; the modality's ``teacher_copies("data2vec2")``).
Masks, the decoder's geometry and the CLS token come from the encoder's registered modality.
The decoder belongs to the pretraining model only: ``encoder.state_dict()`` loads into the
plain encoder for probes and fine-tuning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config_base import Data2Vec2Config, DecoderConfig
from .encoder_base import Encoder
from .masking import num_kept
from .model_base import Shard, TeacherModel, fp32_targets, zero_loss
from .targets import masked_std, std_moments, top_k_targets


class ConvDecoder(nn.Module):
    """Spec §5 item 4: ``layers`` × [grouped conv -> LayerNorm (no affine) -> GELU] with a
    residual between layers of equal width, then a projection back to D.

    ``grid`` (H, W) makes the convolutions 2-D over the patch grid (images); otherwise they
    are 1-D over positions. Works on (B, T, D) channels-last tensors; ``padding_mask`` (B, T)
    True = padding is zeroed before every conv so padding never leaks into real positions.
    """

    def __init__(self, dim: int, cfg: DecoderConfig, grid: tuple[int, int] | None = None) -> None:
        super().__init__()
        width = cfg.dim or dim
        for name, channels in (("encoder dim", dim), ("decoder dim", width)):
            if cfg.groups < 1 or channels % cfg.groups:
                raise ValueError(
                    f"{name} {channels} is not divisible by decoder groups {cfg.groups}"
                )
        self.grid = grid
        self.residual = cfg.residual
        self.input_dropout = cfg.input_dropout
        conv = nn.Conv2d if grid is not None else nn.Conv1d
        self.convs = nn.ModuleList(
            conv(
                dim if i == 0 else width,
                width,
                cfg.kernel,
                padding=cfg.kernel // 2,
                groups=cfg.groups,
            )
            for i in range(cfg.layers)
        )
        if cfg.projection_layers == 1:
            self.proj: nn.Module = nn.Linear(width, dim)
        else:  # spec §5 table, text: Linear(C, 2D)-GELU-Linear(2D, D)
            self.proj = nn.Sequential(nn.Linear(width, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def _conv(self, conv: nn.Module, h: Tensor) -> Tensor:
        b, t, c = h.shape
        if self.grid is None:
            return conv(h.transpose(1, 2)).transpose(1, 2)
        gh, gw = self.grid
        if gh * gw != t:
            raise ValueError(f"decoder grid {self.grid} does not match {t} tokens")
        y = conv(h.transpose(1, 2).reshape(b, c, gh, gw))
        return y.flatten(2).transpose(1, 2)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        h = F.dropout(x, self.input_dropout, self.training)
        keep = None if padding_mask is None else (~padding_mask).unsqueeze(-1).to(h.dtype)
        for conv in self.convs:
            if keep is not None:
                h = h * keep
            y = self._conv(conv, h)
            y = F.gelu(F.layer_norm(y, y.shape[-1:]))  # LayerNorm without affine (FS)
            h = y + h if self.residual and y.shape == h.shape else y
        return self.proj(h)

    def flops_per_sample(self, tokens: int) -> int:
        """Forward matmul FLOPs on ``tokens`` positions (convs and projection)."""
        total = 0
        for conv in self.convs:
            taps = conv.weight[0].numel()  # (C_in / groups) · kernel^d
            total += 2 * tokens * taps * conv.out_channels
        linears = (m for m in self.proj.modules() if isinstance(m, nn.Linear))
        return total + tokens * sum(2 * m.in_features * m.out_features for m in linears)


@dataclass
class VisibleOutput:
    """The student's pass over the visible tokens of every clone."""

    tokens: Tensor  # (B·M, K, D) final-LN outputs at the kept tokens, original order
    keep_idx: Tensor  # (B·M, K) their positions in the (B·M, T) token grid
    keep_pad: Tensor | None  # (B·M, K) True = filler slot (rows with fewer visible tokens)
    cls: Tensor | None  # (B·M, D) images


class Data2Vec2(TeacherModel):
    """data2vec 2.0 pretraining model: student encoder + conv decoder + EMA teacher."""

    method = "data2vec2"

    def __init__(self, encoder: Encoder, cfg: Data2Vec2Config) -> None:
        super().__init__(encoder, cfg)
        self.top_k = encoder.depth if cfg.top_k is None else cfg.top_k
        if self.top_k > encoder.depth:
            raise ValueError(f"top_k={self.top_k} exceeds encoder depth {encoder.depth}")
        if cfg.cls_loss > 0 and not self.modality_ops.cls_tokens:
            raise ValueError(f"cls_loss={cfg.cls_loss}: only the image encoder has a CLS token")
        grid = self.modality_ops.decoder_grid(encoder)
        self.decoder = ConvDecoder(encoder.dim, cfg.decoder, grid)

    # ------------------------------------------------------------ targets (spec §1.2, §5.1)
    @torch.no_grad()
    def compute_targets(
        self, x: Tensor, attention_mask: Tensor | None = None, feat: Tensor | None = None
    ) -> Tensor:
        """(B, T, D) fp32 targets: one teacher pass on the UNMASKED samples (spec §5 item 1),
        top-K FFN taps, instance norm per layer over tokens, average (images: then LN).

        Text rows with padding are normalised on their real tokens only (instance norm would
        count padding as tokens, spec §1.2), one group of equal-length rows at a time; padded
        positions get zeros (they are never scored). fp32 under mixed precision too.
        """
        with fp32_targets(x.device.type):
            return self._targets(x, attention_mask, feat)

    def _targets(self, x: Tensor, attention_mask: Tensor | None, feat: Tensor | None) -> Tensor:
        out = self.teacher_output(x, attention_mask, feat)
        c, layers, pm = self.cfg, out.layers, out.padding_mask
        if pm is None or not bool(pm.any()):
            return top_k_targets(layers, self.top_k, c.target_layer_norm, c.target_final_norm)
        b, t, d = layers[0].shape
        y = layers[0].new_zeros(b, t, d, dtype=torch.float32)
        order = torch.sort(pm.to(torch.uint8), dim=1, stable=True).indices  # real tokens first
        n_real = (~pm).sum(1)
        for n in n_real.unique().tolist():
            if n == 0:
                continue
            rows = (n_real == n).nonzero().squeeze(1)[:, None]
            idx = order[rows.squeeze(1), :n]
            group = [a[rows, idx] for a in layers]
            y[rows, idx] = top_k_targets(
                group, self.top_k, c.target_layer_norm, c.target_final_norm
            )
        return y

    # ------------------------------------------------------------ masks (spec §3, v2)
    def draw_mask(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> Tensor:
        """(B·M, T) bool, True = masked: one independent mask per clone (rows b·M .. b·M+M-1
        are the clones of sample b)."""
        c = self.cfg
        mask = self.modality_ops.v2_mask(self.encoder, batch, c.mask, c.clones, generator)
        return mask.to(batch["x"].device)

    # ------------------------------------------------------------ student (spec §5 items 2-4)
    def encode_visible(
        self, feat: Tensor, padding_mask: Tensor | None, mask: Tensor
    ) -> VisibleOutput:
        """Clone ``feat`` (B, T, D) M times and run the student on each clone's visible tokens.

        Masked features are zeroed before positions are added (FS ``encoder_zero_mask``: the
        speech conv positions mix neighbouring frames) and are then dropped by the gather,
        so the encoder never sees them. Text rows keep different numbers of tokens: the
        gathered batch is padded to the longest and the filler slots are attention-masked.
        """
        m = self.cfg.clones
        feat = feat.repeat_interleave(m, 0)  # spec §5 item 2: clone_batch
        if mask.shape != feat.shape[:2]:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} != clones x tokens {tuple(feat.shape[:2])}"
            )
        pm = None if padding_mask is None else padding_mask.repeat_interleave(m, 0)
        h = self.encoder.embed_positions(feat.masked_fill(mask.unsqueeze(-1), 0.0))
        hidden = mask if pm is None else mask | pm
        n_visible = (~hidden).sum(1)
        k = int(n_visible.max())
        if k == 0:
            raise ValueError("every token of every row is masked or padding")
        keep_idx = torch.sort(hidden.to(torch.uint8), dim=1, stable=True).indices[:, :k]
        tokens = h.gather(1, keep_idx.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        keep_pad = None
        if bool((n_visible < k).any()):
            keep_pad = torch.arange(k, device=h.device)[None] >= n_visible[:, None]
        out = self.encoder.encode_tokens(tokens, keep_pad)
        return VisibleOutput(out.tokens, keep_idx, keep_pad, out.cls)

    def decode(
        self,
        visible: VisibleOutput,
        mask: Tensor,
        padding_mask: Tensor | None = None,
        generator: torch.Generator | None = None,
        shard: Shard | None = None,
    ) -> Tensor:
        """(B·M, T, D) decoder predictions for every position; masked slots start as
        N(0, mask_noise_std²) noise (spec §5 item 4). ``padding_mask`` is per sample (B, T).
        With a ``shard`` the noise is drawn for the global batch and this rank's rows kept."""
        b, t = mask.shape
        d = visible.tokens.shape[-1]
        if shard is None:
            noise = torch.randn(b, t, d, generator=generator) * self.cfg.mask_noise_std
        else:
            rows = shard.global_size * self.cfg.clones
            noise = torch.randn(rows, t, d, generator=generator) * self.cfg.mask_noise_std
            noise = noise[shard.rows.start * self.cfg.clones : shard.rows.stop * self.cfg.clones]
        full = noise.to(device=visible.tokens.device, dtype=visible.tokens.dtype)
        rows = torch.arange(b, device=mask.device)[:, None].expand_as(visible.keep_idx)
        cols, vals = visible.keep_idx, visible.tokens
        if visible.keep_pad is not None:
            real = ~visible.keep_pad
            rows, cols, vals = rows[real], cols[real], vals[real]
        full = full.index_put((rows.reshape(-1), cols.reshape(-1)), vals.reshape(-1, d))
        pm = None
        if padding_mask is not None:
            pm = padding_mask.repeat_interleave(self.cfg.clones, 0)
            full = full.masked_fill(pm.unsqueeze(-1), 0.0)
        return self.decoder(full, pm)

    # ------------------------------------------------------------ loss (spec §1.3 v2, §5.5)
    def masked_targets(self, targets: Tensor, mask: Tensor) -> Tensor:
        """(N_masked, D) targets at the masked positions of the clones: clone row r uses
        sample r // M, so every clone of a sample gets the same teacher output."""
        rows, cols = mask.nonzero(as_tuple=True)
        return targets[rows // self.cfg.clones, cols]

    def loss_from_outputs(
        self,
        pred: Tensor,
        cls: Tensor | None,
        targets: Tensor,
        mask: Tensor,
        denominator: int | None = None,
        cls_rows: int | None = None,
    ) -> tuple[Tensor, dict[str, Any]]:
        """L2 summed over D (× 1/sqrt(D) unless ``loss_scale``), summed over masked tokens,
        divided by their number (FS). Images add ``cls_loss`` × the CLS regression to the mean
        patch target, summed over the B·M clone rows and NOT divided by the masked count: FS
        scales its CLS term by ``cls_loss · sample_size`` before the criterion divides every
        term by ``sample_size`` (the masked-token count).

        ``denominator`` / ``cls_rows`` (data parallelism): the global masked count and clone
        rows; the loss is then this rank's sum over the global count (the CLS sum stays a
        sum), and the stats are summable over ranks."""
        if denominator is not None:
            return self._shard_loss(pred, cls, targets, mask, denominator, cls_rows or 0)
        p = pred[mask]
        if p.shape[0] == 0:  # nothing masked: nothing to learn
            return pred.sum() * 0.0, {"target_std": math.nan, "pred_std": math.nan}
        y = self.masked_targets(targets, mask)
        d = p.shape[-1]
        scale = 1.0 / math.sqrt(d) if self.cfg.loss_scale is None else self.cfg.loss_scale
        loss = (p.float() - y).pow(2).sum() * scale / p.shape[0]
        stats = {"target_std": float(masked_std(y)), "pred_std": float(masked_std(p))}
        if cls is not None and self.cfg.cls_loss > 0:
            cls_y = targets.mean(1).repeat_interleave(self.cfg.clones, 0)
            cls_err = (cls.float() - cls_y).pow(2).sum() * scale
            loss = loss + self.cfg.cls_loss * cls_err
            stats["cls_loss"] = float(cls_err.detach()) / cls.shape[0]
        return loss, stats

    def _shard_loss(
        self,
        pred: Tensor,
        cls: Tensor | None,
        targets: Tensor,
        mask: Tensor,
        denominator: int,
        cls_rows: int,
    ) -> tuple[Tensor, dict[str, Any]]:
        """This rank's part of :meth:`loss_from_outputs` (same terms, global divisors)."""
        p = pred[mask]
        y = self.masked_targets(targets, mask)
        stats: dict[str, Any] = {"target_std": std_moments(y), "pred_std": std_moments(p)}
        d = pred.shape[-1]
        scale = 1.0 / math.sqrt(d) if self.cfg.loss_scale is None else self.cfg.loss_scale
        loss = zero_loss(pred)
        if denominator > 0:
            loss = (p.float() - y).pow(2).sum() * scale / denominator
        if cls is not None and self.cfg.cls_loss > 0:
            cls_y = targets.mean(1).repeat_interleave(self.cfg.clones, 0)
            cls_err = (cls.float() - cls_y).pow(2).sum() * scale
            loss = loss + self.cfg.cls_loss * cls_err
            stats["cls_loss"] = float(cls_err.detach()) / cls_rows
        return loss, stats

    def training_loss(
        self,
        batch: dict[str, Tensor],
        generator: torch.Generator | None = None,
        shard: Shard | None = None,
    ) -> tuple[Tensor, dict[str, Any]]:
        x, am = batch["x"], batch.get("attention_mask")
        feat, padding_mask = self.encoder.embed(x, am)
        shared = feat.detach() if self.modality_ops.teacher_shares_frontend else None
        targets = self.compute_targets(x, am, shared)  # once per sample, not per clone
        if shard is None:
            mask = self.draw_mask(batch, generator)
            visible = self.encode_visible(feat, padding_mask, mask)
            pred = self.decode(visible, mask, padding_mask, generator)
            return self.loss_from_outputs(pred, visible.cls, targets, mask)
        # the global batch's masks and noise, as one process draws them; this rank's rows
        full = self.draw_mask(shard.batch, generator)
        mask = shard.take(full, per_row=self.cfg.clones)
        visible = self.encode_visible(feat, padding_mask, mask)
        pred = self.decode(visible, mask, padding_mask, generator, shard)
        count, rows = int(full.sum()), full.shape[0]
        return self.loss_from_outputs(pred, visible.cls, targets, mask, count, rows)

    # ------------------------------------------------------------ cost
    def visible_tokens(self, input_len: int | None = None) -> int:
        """Tokens per clone the student encodes (excluding CLS), for the FLOP estimate."""
        t = self.encoder.num_tokens(input_len)
        return max(1, num_kept(t, self._scored_fraction()))  # self.mask_cfg is cfg.mask

    def flops_per_step(self, batch_size: int, input_len: int | None = None) -> int:
        """nanoGPT-style model FLOPs: 3× (front-end once + M × (positions, encoder on visible
        tokens, decoder on all tokens)) for forward + backward, plus 1× teacher forward."""
        enc, m = self.encoder, self.cfg.clones
        f = enc.flops_per_sample(input_len)
        t = enc.num_tokens(input_len)
        k = self.visible_tokens(input_len)
        per_clone = (
            f.get("positions", 0)
            + enc.transformer.flops_per_sample(k + self.modality_ops.cls_tokens)
            + self.decoder.flops_per_sample(t)
        )
        student = f["frontend"] + m * per_clone
        teacher = f["transformer"] + f.get("positions", 0)
        if not self.modality_ops.teacher_shares_frontend:
            teacher += f["frontend"]
        return batch_size * (3 * student + teacher)
