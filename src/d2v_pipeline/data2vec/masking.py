"""Mask algorithms (spec §3). Each takes a ``torch.Generator`` so masks are reproducible.

A library: which algorithm a modality uses, on which grid, is decided in its modality file
(:mod:`.modalities`); this module knows no modality.

Per-sample loops (image blocks, speech spans) run in numpy on a generator seeded from the
torch one: cheap at generation time and outside the autograd hot path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor


# What each algorithm reads from its config: the modality files' mask configs
# (:mod:`.modalities`) provide these fields; this module imports none of them.
class BlockMaskSettings(Protocol):
    mask_prob: float
    min_num_patches: int
    max_num_patches: int | None
    min_aspect: float


class SpanMaskSettings(Protocol):
    mask_prob: float
    mask_length: int
    min_masks: int
    require_same_masks: bool


class BertMaskSettings(Protocol):
    mask_prob: float
    random_token_prob: float
    leave_unmasked_prob: float


class InverseBlockMaskSettings(Protocol):
    mask_prob: float
    block_size: int
    adjust: float


class TokenMaskSettings(Protocol):
    mask_prob: float


@dataclass
class MaskedBatch:
    """A v1 / masked-reconstruction batch after masking (spec §3)."""

    student_x: Tensor  # input for the student (text: corrupted ids)
    mask: Tensor | None  # (B, T) feature-level mask (images, speech); None for text
    scored: Tensor  # (B, T) positions that enter the loss


def _numpy_rng(generator: torch.Generator | None) -> np.random.Generator:
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- images: BEiT blocks
def _one_block_mask(
    rng: np.random.Generator,
    h: int,
    w: int,
    target: int,
    min_patches: int,
    max_patches: int,
    log_aspect: tuple[float, float],
) -> np.ndarray:
    """BEiT MaskingGenerator for one image (spec §3; FS data2vec_vision make_mask)."""
    mask = np.zeros((h, w), dtype=bool)
    count = 0
    while count < target:
        remaining = min(target - count, max_patches)
        delta = 0
        for _ in range(10):  # 10 attempts to place one block
            # like random.uniform, allow remaining < min_patches (BEiT relies on it)
            area = min_patches + (remaining - min_patches) * rng.random()
            aspect = math.exp(rng.uniform(*log_aspect))
            bh = round(math.sqrt(area * aspect))
            bw = round(math.sqrt(area / aspect))
            if bw < w and bh < h:
                top = int(rng.integers(0, h - bh + 1))
                left = int(rng.integers(0, w - bw + 1))
                block = mask[top : top + bh, left : left + bw]
                new = bh * bw - int(block.sum())
                if 0 < new <= remaining:  # never overshoot the target count
                    block[:] = True
                    delta = new
                    break
        if delta == 0:  # no progress: stop below the target
            break
        count += delta
    return mask


def block_mask(
    batch_size: int,
    grid: tuple[int, int],
    cfg: BlockMaskSettings,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B, H·W) bool, True = masked; each row covers at most round(mask_prob·H·W) patches."""
    h, w = grid
    target = round(cfg.mask_prob * h * w)
    max_patches = target if cfg.max_num_patches is None else min(cfg.max_num_patches, target)
    log_aspect = (math.log(cfg.min_aspect), math.log(1.0 / cfg.min_aspect))
    rng = _numpy_rng(generator)
    rows = [
        _one_block_mask(rng, h, w, target, cfg.min_num_patches, max_patches, log_aspect).ravel()
        for _ in range(batch_size)
    ]
    return torch.from_numpy(np.stack(rows))


# ---------------------------------------------------------------- speech: spans
def span_mask(
    batch_size: int,
    num_frames: int,
    cfg: SpanMaskSettings,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B, T) bool span mask after FS ``compute_mask_indices`` (static lengths, no padding).

    Per row: ``num = int(mask_prob·T/M + U(0,1))`` span starts drawn without replacement
    from [0, T-M) (FS ``num_mask_ver=2``: one count per row), spans of M frames, overlaps
    merge. With ``require_same_masks`` every row is trimmed at random to the smallest count.
    """
    t, m = num_frames, cfg.mask_length
    rng = _numpy_rng(generator)
    rows = []
    for _ in range(batch_size):
        num = max(cfg.min_masks, int(cfg.mask_prob * t / m + rng.random()))
        if num == 0:
            rows.append(np.zeros(0, dtype=np.int64))
            continue
        min_len = m if t - m > num else t - num - 1
        if min_len < 0:
            raise ValueError(f"cannot place {num} spans of {m} frames in {t} frames")
        starts = rng.choice(t - min_len, num, replace=False)
        idx = np.unique(starts[:, None] + np.arange(m)[None, :])
        rows.append(idx[idx < t])
    smallest = min(len(r) for r in rows)
    mask = np.zeros((batch_size, t), dtype=bool)
    for b, idx in enumerate(rows):
        if cfg.require_same_masks and len(idx) > smallest:
            idx = rng.choice(idx, smallest, replace=False)
        mask[b, idx] = True
    return torch.from_numpy(mask)


# ---------------------------------------------------------------- text: BERT 80/10/10
@dataclass
class TextMask:
    input_ids: Tensor  # (B, L) corrupted ids for the student
    selected: Tensor  # (B, L) bool: all positions chosen for prediction (15%)
    masked: Tensor  # (B, L) bool: positions whose input is now <mask> (80% of selected)


def bert_mask(
    input_ids: Tensor,
    attention_mask: Tensor | None,
    cfg: BertMaskSettings,
    *,
    mask_id: int,
    vocab_size: int,
    never_mask: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
) -> TextMask:
    """BERT masking (spec §3): per row ``int(p·n + U(0,1))`` of the n eligible tokens (real,
    not special) are selected; of these 1-r-u become <mask>, r a random token, u unchanged.
    """
    ids = input_ids.cpu()
    b, length = ids.shape
    special = torch.tensor(never_mask, dtype=ids.dtype)
    eligible = ~torch.isin(ids, special)
    if attention_mask is not None:
        eligible &= attention_mask.cpu().bool()
    n = eligible.sum(1)
    num = (cfg.mask_prob * n + torch.rand(b, generator=generator)).long().clamp(max=n)
    # exactly `num` eligible positions per row: rank random scores, ineligible last
    scores = torch.rand(b, length, generator=generator).masked_fill(~eligible, 2.0)
    rank = torch.empty_like(ids)
    rank.scatter_(1, scores.argsort(1), torch.arange(length).expand(b, length))
    selected = rank < num[:, None]
    u = torch.rand(b, length, generator=generator)
    keep_mask = 1.0 - cfg.random_token_prob - cfg.leave_unmasked_prob
    masked = selected & (u < keep_mask)
    random = selected & (u >= keep_mask) & (u < keep_mask + cfg.random_token_prob)
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[special[special < vocab_size]] = False
    allowed_ids = allowed.nonzero().squeeze(1)
    out = ids.masked_fill(masked, mask_id)
    n_random = int(random.sum())
    if n_random:
        pick = torch.randint(len(allowed_ids), (n_random,), generator=generator)
        out[random] = allowed_ids[pick]
    dev = input_ids.device
    return TextMask(out.to(dev), selected.to(dev), masked.to(dev))


# ---------------------------------------------------------------- data2vec 2.0 (spec §3, §5)
def exact_count(
    selected: Tensor,
    count: Tensor | int,
    eligible: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B, T) bool with exactly ``count`` True per row, as close to ``selected`` as possible.

    Rows with too many selected positions drop a uniformly random subset; rows with too few
    gain uniformly random eligible positions (the FS ``compute_block_mask_2d`` adjustment,
    vectorised). ``count`` may be an int or a (B,) tensor; it must not exceed the eligible
    positions of a row.
    """
    b, t = selected.shape
    eligible = torch.ones_like(selected) if eligible is None else eligible
    selected = selected & eligible
    count = torch.as_tensor(count, dtype=torch.long).expand(b)
    if bool((count > eligible.sum(1)).any()):
        raise ValueError("exact_count: a row has fewer eligible positions than its count")
    # ascending key: selected first (random order), then the other eligible, ineligible last
    key = torch.rand(b, t, generator=generator) + (~selected).float() + 2.0 * (~eligible).float()
    rank = key.argsort(1).argsort(1)
    return rank < count[:, None]


def num_kept(num_tokens: int, mask_prob: float) -> int:
    """Tokens the v2 student sees: int(L·(1-R)) (spec §3), robust to float error
    (1 - 0.9 = 0.0999…: L = 100 keeps 10, not 9)."""
    return int(num_tokens * (1.0 - mask_prob) + 1e-9)


def inverse_block_mask(
    batch_size: int,
    grid: tuple[int, int],
    cfg: InverseBlockMaskSettings,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B, H·W) bool, True = masked. Spec §3 inverse block mask (FS ``compute_block_mask_2d``
    with ``inverse_mask``): draw ``int(L·(1-R+A)/B²)`` centres with replacement, mark a B×B
    square around each as KEPT (offsets ``-(B//2) .. B-1-B//2``, clamped at the borders), then
    add or remove random kept patches until exactly ``int(L·(1-R))`` are kept per image."""
    h, w = grid
    n = h * w
    keep_n = num_kept(n, cfg.mask_prob)
    if not 1 <= keep_n <= n:
        raise ValueError(
            f"inverse block mask keeps {keep_n} of {n} patches (mask_prob {cfg.mask_prob}); "
            "lower mask_prob so at least one patch is kept"
        )
    bs = cfg.block_size
    keep = torch.zeros(batch_size, h, w, dtype=torch.bool)
    centres = int(n * (1.0 - cfg.mask_prob + cfg.adjust) / bs**2)
    if centres > 0:
        c = torch.randint(0, n, (batch_size, centres), generator=generator)
        off = torch.arange(bs) - bs // 2
        rows = (c // w)[:, :, None, None] + off[None, None, :, None]
        cols = (c % w)[:, :, None, None] + off[None, None, None, :]
        rows, cols = torch.broadcast_tensors(rows.clamp(0, h - 1), cols.clamp(0, w - 1))
        bi = torch.arange(batch_size)[:, None, None, None].expand_as(rows)
        keep[bi, rows, cols] = True
    keep = exact_count(keep.view(batch_size, n), keep_n, generator=generator)
    return ~keep


def equal_span_mask(
    batch_size: int,
    num_frames: int,
    cfg: SpanMaskSettings,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B, T) bool v2 speech mask: FS spans (:func:`span_mask`), then every row brought to
    the batch's mean masked count (rounded, at most T-1) so each row keeps the same number of
    frames and the visible frames gather into a dense batch (spec §5 item 3)."""
    spans = span_mask(batch_size, num_frames, cfg, generator)
    target = min(int(spans.sum(1).float().mean().round()), num_frames - 1)
    return exact_count(spans, target, generator=generator)


def random_token_mask(
    input_ids: Tensor,
    attention_mask: Tensor | None,
    cfg: TokenMaskSettings,
    *,
    never_mask: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B, L) bool v2 text mask (spec §3): per row exactly ``round(p·n)`` of the n maskable
    tokens (real, not special), uniformly at random, capped so that one real token stays
    visible. Padding is never masked."""
    ids = input_ids.cpu()
    real = torch.ones_like(ids, dtype=torch.bool)
    if attention_mask is not None:
        real = attention_mask.cpu().bool()
    n_real = real.sum(1)
    if bool((n_real == 0).any()):
        row = int((n_real == 0).nonzero()[0])
        raise ValueError(f"text batch row {row} has no real token (attention_mask all False)")
    eligible = real & ~torch.isin(ids, torch.tensor(never_mask, dtype=ids.dtype))
    n = eligible.sum(1)
    count = torch.minimum((cfg.mask_prob * n + 0.5).floor().long(), n_real - 1)
    empty = torch.zeros_like(eligible)
    return exact_count(empty, count, eligible, generator).to(input_ids.device)
