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
