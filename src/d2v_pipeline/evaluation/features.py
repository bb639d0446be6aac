"""Frozen-encoder features for the linear probe (spec §6: mean-pooled last-layer features,
and the mean of the top-K layers).

Works with any module that follows the encoder contract: ``forward(x, attention_mask=None,
mask=None, return_layers=False)`` returning an object with ``tokens`` (B, T, D), ``layers``
(list of (B, T, D) or None), ``padding_mask`` ((B, T) bool, True = padding, or None) and
``cls`` ((B, D) or None).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from d2v_pipeline.data2vec.runtime import Runtime, autocast, resolve_device

log = logging.getLogger(__name__)

LAYER_MODES = ("final", "top_k_mean", "concat")
POOL_MODES = ("mean", "cls")
_HALF = (torch.float16, torch.bfloat16)


def as_fp32(x: Tensor) -> Tensor:
    """``x`` in float32 if it is bf16/fp16 (an autocast output), else ``x`` itself: pooled
    features and their sums stay fp32 under mixed precision, and fp32 runs are untouched."""
    return x.float() if x.dtype in _HALF else x


def as_tensor(x: Any, name: str) -> Tensor:
    """A torch tensor view of ``x`` (numpy arrays are wrapped without copying)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def module_device(module: nn.Module) -> torch.device:
    """Device of the module's first parameter (CPU for a parameter-free module)."""
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def check_attention_mask(x: Tensor, attention_mask: Tensor | None, name: str = "x") -> None:
    """Raise if ``attention_mask`` does not match ``x`` row for row (text: (N, L) both)."""
    if attention_mask is None:
        return
    if attention_mask.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name} has {x.shape[0]} rows but attention_mask has {attention_mask.shape[0]}"
        )
    if x.ndim == 2 and attention_mask.shape != x.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} != {name} shape {tuple(x.shape)}"
        )


def masked_mean(tokens: Tensor, padding_mask: Tensor | None) -> Tensor:
    """Mean over time of (B, T, D) tokens, ignoring positions where ``padding_mask`` is True
    (in fp32 for bf16/fp16 tokens: a long bf16 sum loses digits)."""
    tokens = as_fp32(tokens)
    if padding_mask is None:
        return tokens.mean(dim=1)
    if padding_mask.shape != tokens.shape[:2]:
        raise ValueError(
            f"padding_mask shape {tuple(padding_mask.shape)} does not match tokens "
            f"{tuple(tokens.shape[:2])}"
        )
    keep = (~padding_mask.bool()).unsqueeze(-1).to(tokens.dtype)
    # clamp: an all-padding row pools to zeros instead of NaN
    return (tokens * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)


def trim_padding(x: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Drop the trailing columns that are padding in every row of a batch (right-padded text).

    The encoder never attends to padded keys and pooling ignores padded positions, so the
    outputs at real positions are unchanged (up to float rounding) while attention and FFN
    cost shrink to the batch's longest row. ``x`` is cut along dim 1 like the mask, so token
    ids (B, L) and frozen front-end features (B, L, D) both work; without a 2-D mask (images,
    speech) nothing changes.
    """
    if attention_mask is None or attention_mask.ndim != 2 or attention_mask.shape[1] == 0:
        return x, attention_mask
    real_cols = attention_mask.any(dim=0).nonzero()
    keep = int(real_cols[-1]) + 1 if len(real_cols) else 1
    if keep == attention_mask.shape[1]:
        return x, attention_mask
    return x[:, :keep], attention_mask[:, :keep]


def inference_batches(attention_mask: Tensor | None, n: int, batch_size: int) -> list[Tensor]:
    """Row indices of the batches for inference over ``n`` rows.

    Without an attention mask: consecutive rows. With one: rows ordered by length, longest
    first (stable), so that :func:`trim_padding` cuts each batch to little padding (text rows
    are about half padding at our sequence length). Callers put the results back in row order.
    """
    if attention_mask is None:
        order = torch.arange(n)
    else:
        order = torch.argsort(attention_mask.sum(dim=1), descending=True, stable=True)
    return list(torch.split(order, batch_size))


def restore_order(batches: list[Tensor], chunks: list[np.ndarray]) -> np.ndarray:
    """Concatenate per-batch results (from :func:`inference_batches`) back into row order."""
    order = torch.cat(batches).numpy()
    out = np.concatenate(chunks, axis=0)
    restored = np.empty_like(out)
    restored[order] = out
    return restored


def output_padding_mask(out: Any, attention_mask: Tensor | None) -> Tensor | None:
    """The encoder's padding mask, or the inverted attention mask when the encoder gives none
    but its token grid matches the input (text without a CLS in ``tokens``)."""
    pm = getattr(out, "padding_mask", None)
    if pm is not None:
        return pm
    if attention_mask is not None and attention_mask.shape == out.tokens.shape[:2]:
        return ~attention_mask.bool()
    return None


def pool_output(out: Any, pool: str, attention_mask: Tensor | None = None) -> Tensor:
    """(B, D) summary of an encoder output: padding-aware mean of ``tokens`` or the CLS vector."""
    if pool == "mean":
        return masked_mean(out.tokens, output_padding_mask(out, attention_mask))
    if pool == "cls":
        if getattr(out, "cls", None) is None:
            raise ValueError("pool='cls' but the encoder returned no CLS token (out.cls is None)")
        return as_fp32(out.cls)
    raise ValueError(f"unknown pool {pool!r}; expected one of {POOL_MODES}")


def _validate(layers: str, top_k: int | None, pool: str, depth: int | None) -> None:
    if layers not in LAYER_MODES:
        raise ValueError(f"unknown layers {layers!r}; expected one of {LAYER_MODES}")
    if pool not in POOL_MODES:
        raise ValueError(f"unknown pool {pool!r}; expected one of {POOL_MODES}")
    if layers == "final" and top_k is not None:
        raise ValueError("top_k is only used with layers='top_k_mean' or 'concat'")
    if layers != "final" and pool == "cls":
        # the contract's per-block taps exclude the CLS token
        raise ValueError(
            f"pool='cls' needs layers='final' (tapped layers carry no CLS); got {layers!r}"
        )
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if depth is not None and top_k > depth:
            raise ValueError(f"top_k={top_k} exceeds the encoder depth {depth}")


def _pooled(out: Any, amb: Tensor | None, layers: str, top_k: int | None, pool: str) -> Tensor:
    """One feature set from one encoder output (``out.layers`` present unless "final")."""
    if layers == "final":
        return pool_output(out, pool, amb)
    taps = out.layers
    if not taps:
        raise ValueError(f"layers={layers!r} needs per-block outputs but the encoder returned none")
    k = len(taps) if top_k is None else top_k
    if k > len(taps):
        raise ValueError(f"top_k={k} exceeds the {len(taps)} tapped blocks")
    # top K = the K blocks closest to the output (spec §1.1 off-by-one rule)
    chosen = taps[-k:]
    pm = output_padding_mask(out, amb)
    # layer norm without affine per token, as for the v1 targets (spec §1.2)
    normed = [F.layer_norm(t.float(), (t.shape[-1],)) for t in chosen]
    if layers == "top_k_mean":
        return masked_mean(torch.stack(normed).mean(dim=0), pm)
    return torch.cat([masked_mean(t, pm) for t in normed], dim=-1)


def extract_feature_sets(
    encoder: nn.Module,
    x: Tensor | np.ndarray,
    attention_mask: Tensor | np.ndarray | None = None,
    *,
    sets: Mapping[str, tuple[str, int | None]],
    pool: str = "mean",
    batch_size: int = 256,
    runtime: Runtime | None = None,
) -> dict[str, np.ndarray]:
    """Several pooled feature sets from ONE encoder pass: ``sets`` maps a name to
    ``(layers, top_k)`` as in :func:`extract_features` (e.g. the final-layer and the
    top-K-mean probes share the forward pass). ``runtime``: see :func:`extract_features`."""
    if not sets:
        raise ValueError("sets is empty: name at least one (layers, top_k) feature set")
    for layers, top_k in sets.values():
        _validate(layers, top_k, pool, getattr(encoder, "depth", None))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    xt = as_tensor(x, "x")
    am = None if attention_mask is None else as_tensor(attention_mask, "attention_mask").bool()
    check_attention_mask(xt, am)
    if xt.shape[0] == 0:
        raise ValueError("x has no rows")
    want_layers = any(layers != "final" for layers, _ in sets.values())
    if runtime is None:
        device = module_device(encoder)
    else:
        device = resolve_device(runtime)
        if module_device(encoder) != device:
            encoder = copy.deepcopy(encoder).to(device)  # the caller's encoder stays put
    was_training = encoder.training
    encoder.eval()
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in sets}
    batches = inference_batches(am, xt.shape[0], batch_size)
    rt = runtime or Runtime()
    try:
        with torch.inference_mode(), _threads(rt.threads), autocast(rt, device):
            for idx in batches:
                xb, amb = trim_padding(xt[idx], None if am is None else am[idx])
                xb = xb.to(device)
                amb = None if amb is None else amb.to(device)
                out = encoder(xb, attention_mask=amb, return_layers=want_layers)
                for name, (layers, top_k) in sets.items():
                    feats = _pooled(out, amb, layers, top_k, pool)
                    chunks[name].append(feats.float().cpu().numpy())
    finally:
        encoder.train(was_training)
    return {name: restore_order(batches, c) for name, c in chunks.items()}


def extract_features(
    encoder: nn.Module,
    x: Tensor | np.ndarray,
    attention_mask: Tensor | np.ndarray | None = None,
    *,
    layers: str = "final",
    top_k: int | None = None,
    pool: str = "mean",
    batch_size: int = 256,
    runtime: Runtime | None = None,
) -> np.ndarray:
    """Pooled features of a frozen encoder, one row per input row.

    Args:
        encoder: a contract-following encoder; run in eval mode (its mode is restored after).
        x: a split's ``*.x`` array (image (N,C,H,W), speech (N,S), text (N,L) int64).
        attention_mask: text only, (N, L) bool, True = real token.
        layers: "final" (the final-LN output), "top_k_mean" (mean of the layer-normed outputs
            of the top ``top_k`` blocks, default all) or "concat" (per-block layer-normed,
            mean-pooled outputs of the top ``top_k`` blocks, concatenated bottom to top).
        top_k: number of top blocks for "top_k_mean"/"concat"; None = every block.
        pool: "mean" (ignores padding) or "cls" (only with layers="final").
        batch_size: rows per forward pass (text: rows grouped by length, padding trimmed).
        runtime: device (a copy of the encoder is moved there if it lives elsewhere), threads
            and precision (bf16/fp16 autocast around the encoder; pooling and the per-layer
            norms in fp32). ``compile`` and ``nproc_per_node`` are not used: one inference
            pass is shorter than a compilation, and every rank may extract alone.
            None = the encoder's own device, fp32, threads as they are.
    Returns:
        float32 array (N, D), or (N, K*D) for "concat", on the CPU whatever the device.
    """
    sets = {"features": (layers, top_k)}
    return extract_feature_sets(
        encoder, x, attention_mask, sets=sets, pool=pool, batch_size=batch_size, runtime=runtime
    )["features"]


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """torch intra-op threads set to ``n`` for the block (None = leave as is)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
