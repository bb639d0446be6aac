"""Mask statistics over 1,000 draws (spec §8.8) and determinism."""

from __future__ import annotations

import pytest
import torch

from d2v_pipeline.data2vec import (
    ImageMaskConfig,
    SpeechMaskConfig,
    TextMaskConfig,
    bert_mask,
    block_mask,
    span_mask,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("grid", "cfg"),
    [
        ((4, 4), ImageMaskConfig()),  # MNIST patch 7: 60% -> 10 of 16
        ((14, 14), ImageMaskConfig(mask_prob=120 / 196, min_num_patches=16)),  # DV: 120 of 196
    ],
)
def test_block_mask_reaches_but_never_exceeds_target(grid: tuple[int, int], cfg) -> None:
    m = block_mask(1000, grid, cfg, gen())
    target = round(cfg.mask_prob * grid[0] * grid[1])
    counts = m.sum(1)
    assert m.shape == (1000, grid[0] * grid[1]) and m.dtype == torch.bool
    assert int(counts.max()) <= target  # spec §8.8: at most the target count ...
    assert (counts == target).float().mean() > 0.6  # ... and usually exactly it
    assert abs(float(m.float().mean()) - target / m.shape[1]) < 0.03


def test_block_mask_makes_blocks_not_scattered_patches() -> None:
    m = block_mask(200, (8, 8), ImageMaskConfig(min_num_patches=4), gen()).view(200, 8, 8)
    # a masked patch in a block has a masked 4-neighbour far more often than at random (60%)
    mf = m.float()
    neigh = torch.zeros_like(mf)
    neigh[:, 1:] += mf[:, :-1]
    neigh[:, :-1] += mf[:, 1:]
    neigh[:, :, 1:] += mf[:, :, :-1]
    neigh[:, :, :-1] += mf[:, :, 1:]
    assert float((neigh[m] > 0).float().mean()) > 0.97


@pytest.mark.parametrize(("frames", "expected"), [(49, 0.51), (99, 0.50)])
def test_speech_span_mask_ratio_matches_spec_simulation(frames: int, expected: float) -> None:
    cfg = SpeechMaskConfig(mask_prob=0.65, mask_length=10, require_same_masks=False)
    m = span_mask(1000, frames, cfg, gen())
    assert m.shape == (1000, frames)
    assert abs(float(m.float().mean()) - expected) < 0.03  # spec §8.8: within 3 points


def test_speech_same_masks_give_equal_counts_per_row() -> None:
    for seed in range(20):
        m = span_mask(16, 49, SpeechMaskConfig(require_same_masks=True), gen(seed))
        counts = m.sum(1)
        assert (counts == counts[0]).all() and counts[0] > 0


def test_text_bert_mask_rates_and_special_tokens() -> None:
    g = gen(1)
    ids = torch.randint(5, 500, (1000, 64), generator=g)
    ids[:, 0] = 2  # CLS
    am = torch.arange(64)[None] < torch.randint(32, 65, (1000, 1), generator=g)
    ids = ids.masked_fill(~am, 0)
    cfg = TextMaskConfig()
    tm = bert_mask(ids, am, cfg, mask_id=1, vocab_size=500, never_mask=(0, 1, 2), generator=g)
    eligible = am & (ids != 2)
    sel = tm.selected
    assert not sel[~eligible].any()  # never padding nor CLS
    assert abs(float(sel.sum()) / float(eligible.sum()) - 0.15) < 0.02
    n = float(sel.sum())
    as_mask = float(tm.masked.sum()) / n
    unchanged = float((sel & (tm.input_ids == ids)).sum()) / n
    random = float((sel & (tm.input_ids != ids) & (tm.input_ids != 1)).sum()) / n
    assert abs(as_mask - 0.8) < 0.02
    # random replacements can draw the original id (1/497): a hair below 10% / above 10%
    assert abs(random - 0.1) < 0.02 and abs(unchanged - 0.1) < 0.02
    assert torch.equal(tm.masked, sel & (tm.input_ids == 1))
    assert torch.equal(tm.input_ids[~sel], ids[~sel])
    assert not torch.isin(tm.input_ids[sel & ~tm.masked], torch.tensor([0, 1, 2])).any()


def test_masks_are_reproducible_from_the_generator() -> None:
    cfgs = (ImageMaskConfig(), SpeechMaskConfig())
    assert torch.equal(
        block_mask(8, (4, 4), cfgs[0], gen(3)), block_mask(8, (4, 4), cfgs[0], gen(3))
    )
    assert torch.equal(span_mask(8, 49, cfgs[1], gen(3)), span_mask(8, 49, cfgs[1], gen(3)))
    assert not torch.equal(span_mask(8, 49, cfgs[1], gen(3)), span_mask(8, 49, cfgs[1], gen(4)))
    ids = torch.randint(5, 50, (8, 20), generator=gen(0))
    a = bert_mask(ids, None, TextMaskConfig(), mask_id=1, vocab_size=50, generator=gen(5))
    b = bert_mask(ids, None, TextMaskConfig(), mask_id=1, vocab_size=50, generator=gen(5))
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.selected, b.selected)
