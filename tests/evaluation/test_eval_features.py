"""Frozen-encoder features from the real tiny encoders: pooling, layer modes, padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from d2v_pipeline.evaluation.features import (
    extract_feature_sets,
    extract_features,
    trim_padding,
)


def test_final_mean_pool_equals_mean_of_tokens(make_encoder, digits):
    enc = make_encoder("image")
    x = digits["train.x"][:20]
    feats = extract_features(enc, x, batch_size=7)
    enc.eval()
    with torch.no_grad():
        expected = enc(torch.from_numpy(x)).tokens.mean(dim=1).numpy()
    assert feats.shape == (20, enc.dim) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, expected, atol=1e-5)


def test_batch_size_does_not_change_features_and_mode_is_restored(make_encoder):
    enc = make_encoder("speech")
    x = torch.randn(9, 4000, generator=torch.Generator().manual_seed(0))
    enc.train()
    a = extract_features(enc, x, batch_size=2)
    b = extract_features(enc, x, batch_size=256)
    np.testing.assert_allclose(a, b, atol=1e-5)  # eval mode: no dropout / layerdrop
    assert enc.training


def test_cls_pool_uses_the_cls_token(make_encoder, digits):
    enc = make_encoder("image")
    x = digits["val.x"][:5]
    feats = extract_features(enc, x, pool="cls")
    enc.eval()
    with torch.no_grad():
        np.testing.assert_allclose(feats, enc(torch.from_numpy(x)).cls.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="no CLS token"):
        extract_features(make_encoder("speech"), torch.randn(2, 4000), pool="cls")


def test_top_k_mean_and_concat_use_the_top_blocks(make_encoder, digits):
    enc = make_encoder("image", depth=3)
    x = digits["val.x"][:6]
    enc.eval()
    with torch.no_grad():
        taps = enc(torch.from_numpy(x), return_layers=True).layers
    normed = [F.layer_norm(t, (t.shape[-1],)).mean(dim=1).numpy() for t in taps]
    # mean pooling is linear, so mean-of-pooled equals pooled-of-mean
    top2 = extract_features(enc, x, layers="top_k_mean", top_k=2)
    np.testing.assert_allclose(top2, (normed[1] + normed[2]) / 2, atol=1e-5)
    top1 = extract_features(enc, x, layers="top_k_mean", top_k=1)
    np.testing.assert_allclose(top1, normed[2], atol=1e-5)
    cat = extract_features(enc, x, layers="concat")
    assert cat.shape == (6, 3 * enc.dim)
    np.testing.assert_allclose(cat, np.concatenate(normed, axis=1), atol=1e-5)
    cat2 = extract_features(enc, x, layers="concat", top_k=2)
    np.testing.assert_allclose(cat2, cat[:, enc.dim :], atol=1e-6)


def test_feature_sets_from_one_pass_equal_separate_extractions(make_encoder, digits):
    enc = make_encoder("image", depth=3)
    x = digits["val.x"][:10]
    sets = {"final": ("final", None), "top2": ("top_k_mean", 2), "cat": ("concat", None)}
    together = extract_feature_sets(enc, x, sets=sets, batch_size=4)
    assert set(together) == set(sets)
    for name, (layers, k) in sets.items():
        alone = extract_features(enc, x, layers=layers, top_k=k)
        np.testing.assert_allclose(together[name], alone, atol=1e-6)
    with pytest.raises(ValueError, match="sets is empty"):
        extract_feature_sets(enc, x, sets={})


def test_mean_pool_ignores_appended_padding(make_encoder):
    enc = make_encoder("text")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 40, (4, 10), generator=g)
    am = torch.ones(4, 10, dtype=torch.bool)
    am[1, 7:] = False  # one row already padded inside the first 10 positions
    ids[1, 7:] = 0
    padded = torch.cat([ids, torch.zeros(4, 6, dtype=torch.int64)], dim=1)
    padded_am = torch.cat([am, torch.zeros(4, 6, dtype=torch.bool)], dim=1)
    for layers in ("final", "top_k_mean", "concat"):
        a = extract_features(enc, ids, am, layers=layers)
        b = extract_features(enc, padded, padded_am, layers=layers)
        np.testing.assert_allclose(a, b, atol=1e-5)
    # and padding really is excluded: without the mask the features change
    c = extract_features(enc, padded, torch.ones_like(padded_am))
    assert not np.allclose(c, extract_features(enc, ids, am), atol=1e-3)


def test_length_grouped_batches_give_the_untrimmed_features_in_row_order(make_encoder):
    # rows of very different lengths: inference sorts them by length and cuts each batch to
    # its longest row; the result must equal one untrimmed pass over the full padded matrix
    enc = make_encoder("text")
    g = torch.Generator().manual_seed(1)
    n, length = 11, 16
    ids = torch.randint(2, 40, (n, length), generator=g)
    lengths = torch.tensor([3, 16, 5, 9, 1, 12, 7, 16, 2, 4, 10])
    am = torch.arange(length)[None, :] < lengths[:, None]
    ids[~am] = 0
    enc.eval()
    with torch.no_grad():
        out = enc(ids, attention_mask=am)
        expected = (out.tokens * am[..., None]).sum(1) / am.sum(1, keepdim=True)
    for batch_size in (3, 256):
        feats = extract_features(enc, ids, am, batch_size=batch_size)
        np.testing.assert_allclose(feats, expected.numpy(), atol=1e-5)


def test_trim_padding_cuts_only_columns_that_are_padding_in_every_row():
    x = torch.arange(12).reshape(2, 6)
    am = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 0, 1, 1, 0, 0]], dtype=torch.bool)
    xt, amt = trim_padding(x, am)
    assert xt.tolist() == [[0, 1, 2, 3], [6, 7, 8, 9]] and amt.shape == (2, 4)
    feats = torch.randn(2, 6, 5)  # frozen front-end features are cut along time the same way
    assert trim_padding(feats, am)[0].shape == (2, 4, 5)
    full = torch.ones(2, 6, dtype=torch.bool)
    assert trim_padding(x, full)[0] is x and trim_padding(x, None) == (x, None)


def test_bad_arguments_raise(make_encoder, digits):
    enc = make_encoder("image")
    x = digits["val.x"][:4]
    with pytest.raises(ValueError, match="unknown layers 'middle'"):
        extract_features(enc, x, layers="middle")
    with pytest.raises(ValueError, match="unknown pool 'max'"):
        extract_features(enc, x, pool="max")
    with pytest.raises(ValueError, match="top_k=5 exceeds the encoder depth 2"):
        extract_features(enc, x, layers="top_k_mean", top_k=5)
    with pytest.raises(ValueError, match="needs layers='final'"):
        extract_features(enc, x, layers="concat", pool="cls")
    text = make_encoder("text")
    ids = torch.randint(2, 40, (4, 8))
    with pytest.raises(ValueError, match="4 rows but attention_mask has 3"):
        extract_features(text, ids, torch.ones(3, 8, dtype=torch.bool))
