"""Mask generators (spec §3). Each takes a ``torch.Generator`` so masks are reproducible.

Per-sample loops (image blocks, speech spans) run in numpy on a generator seeded from the
torch one: cheap at generation time and outside the autograd hot path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .config import ImageMaskConfig, SpeechMaskConfig, TextMaskConfig


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
    cfg: ImageMaskConfig,
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
    cfg: SpeechMaskConfig,
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
    cfg: TextMaskConfig,
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
