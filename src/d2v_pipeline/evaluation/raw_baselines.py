"""Raw-input baselines: a fixed feature extractor per modality + the same linear probe.

image: the normalised pixels; speech: log-mel statistics (STFT and mel filterbank written
here with torch.stft, no torchaudio/librosa); text: TF-IDF word 1-2 grams fitted on the
train texts only. calibration.md shows these beat tiny pretrained encoders by a wide
margin, so every report shows them next to data2vec.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer

from d2v_pipeline.data2vec.config_base import from_dict
from d2v_pipeline.evaluation.features import as_tensor
from d2v_pipeline.evaluation.probe import DEFAULT_CS, ProbeResult, linear_probe

MODALITIES = ("image", "speech", "text")


@dataclass
class RawBaselineConfig:
    """Feature settings of the raw-input baselines (defaults: 40 mel bands, 25 ms / 10 ms)."""

    sample_rate: int = 16000
    n_mels: int = 40
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int | None = None  # None = next power of two >= the window length
    fmin: float = 0.0
    fmax: float | None = None  # None = Nyquist
    deltas: bool = True  # also mean/std of the first-order regression deltas
    log_eps: float = 1e-6
    ngram_max: int = 2
    min_df: int = 1
    max_features: int | None = None
    sublinear_tf: bool = True
    batch_size: int = 512

    def __post_init__(self) -> None:
        # Ranges are declared once, in the parameter schema (d2v_pipeline.schema.finetune);
        # kept: the speech features step through clips in batches, and the mel filterbank needs
        # 0 <= fmin < fmax <= Nyquist (else its filters are empty or reversed, an obscure
        # failure far from the setting).
        if self.batch_size < 1:
            raise ValueError(f"RawBaselineConfig.batch_size must be >= 1, got {self.batch_size}")
        nyquist = self.sample_rate / 2
        fmax = nyquist if self.fmax is None else self.fmax
        if not 0 <= self.fmin < fmax <= nyquist:
            raise ValueError(
                f"RawBaselineConfig needs 0 <= fmin < fmax <= sample_rate/2 ({nyquist}); "
                f"got fmin={self.fmin}, fmax={self.fmax}"
            )

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> RawBaselineConfig:
        """Build from a parameters dict; an unknown key or a wrongly typed value is a
        ``ConfigError`` (a ValueError) naming it (the data2vec configs' own ``from_dict``)."""
        return from_dict(cls, params, "RawBaselineConfig")

    @property
    def win_length(self) -> int:
        return round(self.win_ms * self.sample_rate / 1000)

    @property
    def hop_length(self) -> int:
        return max(1, round(self.hop_ms * self.sample_rate / 1000))

    @property
    def fft_size(self) -> int:
        return self.n_fft or 2 ** math.ceil(math.log2(self.win_length))


# ---------------------------------------------------------------- speech: log-mel


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_mels: int, n_fft: int, sample_rate: int, fmin: float = 0.0, fmax: float | None = None
) -> torch.Tensor:
    """(n_mels, n_fft//2 + 1) triangular filters, equally spaced on the HTK mel scale,
    peak 1 at each band centre (no area normalisation)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bins_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins_hz[None] - lower) / (centre - lower)
    falling = (upper - bins_hz[None]) / (upper - centre)
    fb = np.clip(np.minimum(rising, falling), 0.0, None)
    empty = np.flatnonzero(fb.sum(axis=1) == 0)
    if empty.size:
        raise ValueError(
            f"mel band(s) {empty.tolist()} cover no FFT bin: use fewer mel bands ({n_mels}) "
            f"or a larger n_fft ({n_fft})"
        )
    return torch.from_numpy(fb.astype(np.float32))


def log_mel_spectrogram(x: torch.Tensor | np.ndarray, cfg: RawBaselineConfig) -> torch.Tensor:
    """(N, S) waveforms -> (N, n_mels, frames) natural-log mel power (Hann window, centred)."""
    wav = as_tensor(x, "x").float()
    if wav.ndim != 2:
        raise ValueError(f"speech x must be (N, samples), got shape {tuple(wav.shape)}")
    n_fft = cfg.fft_size
    window = torch.hann_window(cfg.win_length)
    spec = torch.stft(
        wav,
        n_fft=n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    power = spec.real.square() + spec.imag.square()
    fb = mel_filterbank(cfg.n_mels, n_fft, cfg.sample_rate, cfg.fmin, cfg.fmax)
    return torch.log(torch.einsum("mf,nft->nmt", fb, power) + cfg.log_eps)


def regression_deltas(feats: torch.Tensor, width: int = 2) -> torch.Tensor:
    """First-order deltas over the last (time) axis: sum_k k (c[t+k] - c[t-k]) / (2 sum k^2),
    with edge frames repeated."""
    padded = torch.cat(
        [
            feats[..., :1].expand(*feats.shape[:-1], width),
            feats,
            feats[..., -1:].expand(*feats.shape[:-1], width),
        ],
        dim=-1,
    )
    t = feats.shape[-1]
    num = sum(
        k * (padded[..., width + k : width + k + t] - padded[..., width - k : width - k + t])
        for k in range(1, width + 1)
    )
    return num / (2 * sum(k * k for k in range(1, width + 1)))


def log_mel_features(
    x: torch.Tensor | np.ndarray, cfg: RawBaselineConfig | None = None
) -> np.ndarray:
    """Utterance statistics: mean and std over time of each log-mel band (and of its deltas).

    Returns float32 (N, 2 * n_mels) or (N, 4 * n_mels) with deltas, ordered
    [mel mean, mel std, delta mean, delta std].
    """
    cfg = cfg or RawBaselineConfig()
    wav = as_tensor(x, "x")
    if wav.ndim != 2:
        raise ValueError(f"speech x must be (N, samples), got shape {tuple(wav.shape)}")
    if wav.shape[1] < cfg.win_length:
        raise ValueError(f"clips of {wav.shape[1]} samples are shorter than one window")
    out = []
    for i in range(0, wav.shape[0], cfg.batch_size):
        lm = log_mel_spectrogram(wav[i : i + cfg.batch_size], cfg)
        parts = [lm.mean(dim=-1), lm.std(dim=-1, correction=0)]
        if cfg.deltas:
            d = regression_deltas(lm)
            parts += [d.mean(dim=-1), d.std(dim=-1, correction=0)]
        out.append(torch.cat(parts, dim=-1).numpy())
    return np.concatenate(out, axis=0).astype(np.float32)


# ---------------------------------------------------------------- image and text


def pixel_features(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, C, H, W) images -> (N, C*H*W) float32 pixels."""
    arr = as_tensor(x, "x")
    if arr.ndim != 4:
        raise ValueError(f"image x must be (N, C, H, W), got shape {tuple(arr.shape)}")
    return arr.reshape(arr.shape[0], -1).float().numpy()


def _check_texts(texts: Any, name: str) -> list[str]:
    # any iterable of str (list, numpy array, pandas Series), but not one bare string
    if isinstance(texts, str | bytes) or not hasattr(texts, "__iter__"):
        raise TypeError(f"{name} must be a sequence of strings, got {type(texts).__name__}")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] is {type(t).__name__}, not str")
    if not out:
        raise ValueError(f"{name} is empty")
    return out


def tfidf_features(
    train_texts: Sequence[str], *other_texts: Sequence[str], cfg: RawBaselineConfig | None = None
) -> list[Any]:
    """TF-IDF of word 1..ngram_max grams, vocabulary and idf fitted on ``train_texts`` only.

    Returns sparse matrices: [train, *others] in the order given.
    """
    cfg = cfg or RawBaselineConfig()
    vec = TfidfVectorizer(
        ngram_range=(1, cfg.ngram_max),
        min_df=cfg.min_df,
        max_features=cfg.max_features,
        sublinear_tf=cfg.sublinear_tf,
        lowercase=True,
    )
    train = vec.fit_transform(_check_texts(train_texts, "train texts"))
    others = [vec.transform(_check_texts(t, f"texts #{i + 1}")) for i, t in enumerate(other_texts)]
    return [train, *others]


# ---------------------------------------------------------------- the baseline


def raw_features(
    modality: str, train: Any, val: Any, test: Any, cfg: RawBaselineConfig | None = None
) -> tuple[Any, Any, Any]:
    """Raw-input features for the three splits (text: lists of strings; others: ``*.x``)."""
    cfg = cfg or RawBaselineConfig()
    if modality == "image":
        return pixel_features(train), pixel_features(val), pixel_features(test)
    if modality == "speech":
        return log_mel_features(train, cfg), log_mel_features(val, cfg), log_mel_features(test, cfg)
    if modality == "text":
        tr, va, te = tfidf_features(train, val, test, cfg=cfg)
        return tr, va, te
    raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")


def raw_baseline(
    modality: str,
    train_x: Any,
    train_y: Any,
    val_x: Any,
    val_y: Any,
    test_x: Any,
    test_y: Any,
    *,
    cfg: RawBaselineConfig | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    max_iter: int = 1000,
    seed: int = 0,
    num_classes: int | None = None,
) -> ProbeResult:
    """Raw features + :func:`linear_probe` (C chosen on val). TF-IDF is not standardised:
    z-scoring sparse n-gram counts would blow up the rarest n-grams."""
    start = time.perf_counter()
    ftr, fva, fte = raw_features(modality, train_x, val_x, test_x, cfg)
    feature_seconds = time.perf_counter() - start
    result = linear_probe(
        ftr, train_y, fva, val_y, fte, test_y,
        Cs=Cs, max_iter=max_iter, seed=seed, num_classes=num_classes,
        standardize=modality != "text",
    )  # fmt: skip
    result.extra["feature_seconds"] = feature_seconds
    result.extra["features"] = {"image": "pixels", "speech": "log-mel stats", "text": "tf-idf"}[
        modality
    ]
    return result
