"""Raw-input baselines: log-mel features on synthetic tones, pixels, TF-IDF on a toy corpus."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from d2v_pipeline.evaluation.raw_baselines import (
    RawBaselineConfig,
    hz_to_mel,
    log_mel_features,
    mel_filterbank,
    mel_to_hz,
    raw_baseline,
    raw_features,
    tfidf_features,
)

SR = 16000


def tones(freqs, n_samples=SR, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / SR
    x = np.stack([np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in freqs])
    x = x + noise * rng.standard_normal(x.shape)
    return ((x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)).astype(np.float32)


def test_log_mel_shape_finite_and_tone_in_the_right_band():
    cfg = RawBaselineConfig()
    freqs = [300.0, 1000.0, 3000.0, 6000.0]
    feats = log_mel_features(tones(freqs), cfg)
    assert feats.shape == (4, 4 * cfg.n_mels) and feats.dtype == np.float32
    assert np.isfinite(feats).all()
    centres = mel_to_hz(np.linspace(hz_to_mel(0), hz_to_mel(SR / 2), cfg.n_mels + 2))[1:-1]
    for row, f in zip(feats, freqs, strict=True):
        band = int(np.argmax(row[: cfg.n_mels]))  # mean log-mel per band
        assert abs(centres[band] - f) == pytest.approx(np.min(np.abs(centres - f)))
    # a steady tone: deltas average ~0
    assert np.abs(feats[:, 2 * cfg.n_mels : 3 * cfg.n_mels]).max() < 0.05
    no_deltas = log_mel_features(np.zeros((2, 8000), np.float32), RawBaselineConfig(deltas=False))
    assert no_deltas.shape == (2, 2 * cfg.n_mels) and np.isfinite(no_deltas).all()


def test_mel_filterbank_is_ordered_triangles():
    fb = mel_filterbank(40, 512, SR).numpy()
    assert fb.shape == (40, 257)
    assert (fb >= 0).all() and fb.max() <= 1.0
    peaks = fb.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all() and (fb.sum(axis=1) > 0).all()
    with pytest.raises(ValueError, match="cover no FFT bin"):
        mel_filterbank(128, 64, SR)


def test_speech_baseline_tells_tones_apart():
    rng = np.random.default_rng(0)
    base = np.array([400.0, 800.0, 1600.0])
    y = {s: rng.integers(0, 3, n) for s, n in (("train", 60), ("val", 30), ("test", 30))}
    x = {
        s: tones(base[y[s]] * rng.uniform(0.95, 1.05, len(y[s])), 8000, noise=1.0, seed=i)
        for i, s in enumerate(y)
    }
    r = raw_baseline(
        "speech",
        x["train"],
        y["train"],
        x["val"],
        y["val"],
        x["test"],
        y["test"],
        Cs=(0.01, 0.1, 1.0),
    )
    assert r.test_accuracy > 0.9
    assert r.num_features == 160 and r.extra["features"] == "log-mel stats"


def test_pixel_baseline_on_digits(digits):
    r = raw_baseline(
        "image",
        digits["train.x"],
        digits["train.y"],
        digits["val.x"],
        digits["val.y"],
        digits["test.x"],
        digits["test.y"],
        Cs=(0.01, 0.1, 1.0),
    )
    assert r.test_accuracy > 0.9 and r.num_features == 64


TRAIN = [
    "a good film with great acting",
    "great story and good fun",
    "truly good and great",
    "what a great cast",
    "good direction great score",
    "a bad film with awful acting",
    "awful story and bad pacing",
    "truly bad and awful",
    "what an awful cast",
    "bad direction awful score",
]
TRAIN_Y = [0] * 5 + [1] * 5


def test_tfidf_baseline_learns_a_separable_corpus():
    val = ["good and great", "awful and bad", "great fun", "bad pacing"]
    test = ["a great good film", "an awful bad film", "good cast", "awful acting"]
    r = raw_baseline(
        "text", TRAIN, TRAIN_Y, val, [0, 1, 0, 1], test, [0, 1, 0, 1], Cs=(1.0, 10.0, 100.0)
    )
    assert r.test_accuracy == 1.0
    assert r.extra["features"] == "tf-idf"


def test_tfidf_is_fitted_on_train_only():
    tr, te = tfidf_features(TRAIN, ["zebra quokka", "good zebra"])
    assert te.shape[1] == tr.shape[1]
    assert te[0].nnz == 0  # words never seen in train have no column
    assert te[1].nnz == 1
    bigrams = tfidf_features(TRAIN, cfg=RawBaselineConfig(ngram_max=1))[0]
    assert bigrams.shape[1] < tr.shape[1]  # default includes word 2-grams


def test_raw_baseline_bad_input():
    with pytest.raises(ValueError, match="unknown modality 'video'"):
        raw_features("video", [], [], [])
    with pytest.raises(TypeError, match=r"texts #1\[1\] is int"):
        tfidf_features(TRAIN, ["fine", 3])
    with pytest.raises(ValueError, match="speech x must be"):
        log_mel_features(torch.zeros(2, 1, 8000))
    with pytest.raises(ValueError, match=r"RawBaselineConfig: unknown key 'n_mel'"):
        RawBaselineConfig.from_dict({"n_mel": 40})
    with pytest.raises(ValueError, match="train_y has 9 labels"):
        raw_baseline("text", TRAIN, TRAIN_Y[:-1], TRAIN, TRAIN_Y, TRAIN, TRAIN_Y)
