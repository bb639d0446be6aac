"""Teacher targets: normalise each of the top-K tapped layers, average, optionally normalise
again (spec §1.2). Parameter-free, fp32, no grad. Layers are (B, T, D).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def normalize_layer(a: Tensor, how: str) -> Tensor:
    """``instance``: per (sample, channel) over time (speech, spec §1.2);
    ``layer``: per token over channels (text / vision); ``none``: identity. fp32 out."""
    a = a.float()
    if how == "instance":
        # spec §1.2 / §9: F.instance_norm wants (B, C, T) -> normalise over time per channel
        return F.instance_norm(a.transpose(1, 2), eps=1e-5).transpose(1, 2)
    if how == "layer":
        return F.layer_norm(a, a.shape[-1:], eps=1e-5)
    if how == "none":
        return a
    raise ValueError(f"unknown target norm {how!r}; expected instance, layer or none")


@torch.no_grad()
def top_k_targets(
    layers: Sequence[Tensor], k: int, layer_norm: str = "layer", final_norm: str = "none"
) -> Tensor:
    """y = final_norm(mean over the last k layers of layer_norm(a^l)) (spec §1, step 4).

    ``layers`` are per-block taps only (never the embedding output); "top K" = ``layers[-k:]``.
    """
    if not 1 <= k <= len(layers):
        raise ValueError(f"top_k={k} but the encoder has {len(layers)} blocks")
    top = layers[-k:]
    y = normalize_layer(top[0], layer_norm)
    for a in top[1:]:
        y = y + normalize_layer(a, layer_norm)
    return normalize_layer(y / k, final_norm)


@torch.no_grad()
def masked_std(y: Tensor) -> Tensor:
    """FS ``compute_var``: std over tokens per channel (eps 1e-6), averaged over channels.

    ``y`` is (N, D) (e.g. the masked positions); used as the collapse signal of spec §9.
    """
    y = y.float().reshape(-1, y.shape[-1])
    if y.shape[0] < 2:
        return y.new_tensor(float("nan"))
    return torch.sqrt(y.var(dim=0) + 1e-6).mean()


# ---------------------------------------------------------------- data-parallel statistics
@torch.no_grad()
def std_moments(y: Tensor) -> Tensor:
    """(1 + 2D,) float64 [N, Σy, Σy²] of the (N, D) rows of ``y``: summed over ranks they
    give :func:`masked_std` of all ranks' rows together (:func:`std_from_moments`)."""
    y = y.detach().double().reshape(-1, y.shape[-1])
    n = y.new_tensor([float(y.shape[0])])
    return torch.cat([n, y.sum(0), y.pow(2).sum(0)])


def std_from_moments(m: Tensor) -> float:
    """:func:`masked_std` (unbiased variance per channel, eps 1e-6, mean over channels) from
    summed :func:`std_moments`; NaN for fewer than 2 rows, as masked_std. Equal to it up to
    float rounding (another summation order), which is all a logged statistic needs."""
    n = float(m[0])
    if n < 2:
        return float("nan")
    d = (m.numel() - 1) // 2
    s1, s2 = m[1 : 1 + d], m[1 + d :]
    var = ((s2 - s1 * s1 / n) / (n - 1)).clamp_min(0.0)
    return float(torch.sqrt(var + 1e-6).mean())
