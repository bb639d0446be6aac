"""Training helpers shared by pretraining (:mod:`.train`) and fine-tuning
(:mod:`d2v_pipeline.evaluation.finetune`), so the two loops cannot drift apart: the learning
rate schedule, the CPU setup of a run, seed derivation, the optimiser step and the
generator-driven image shift.

Every random draw takes an explicit ``torch.Generator``: a transform on the global RNG would
make a resumed run differ from an uninterrupted one (bitwise resume, :mod:`.train`). The
device, precision and process group of a run are :mod:`.runtime`'s.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from .runtime import sum_gradients_


# ---------------------------------------------------------------- seeds
def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed from ``seed`` and ``keys`` (e.g. ("mask", step)); stable across runs."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seeded_generator(seed: int, *keys: object) -> torch.Generator:
    """A CPU generator seeded with ``seed`` itself, or with ``derive_seed(seed, *keys)``."""
    return torch.Generator().manual_seed(derive_seed(seed, *keys) if keys else seed)


# ---------------------------------------------------------------- schedule
def warmup_cosine_lr(step: int, total: int, warmup: int, peak: float, min_lr: float) -> float:
    """Linear warmup to ``peak`` over ``warmup`` steps, then cosine down to ``min_lr`` at
    ``total`` (``step`` is 0-based; steps past ``total`` stay at ``min_lr``)."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (peak - min_lr) * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------- CPU setup
@contextmanager
def training_run(threads: int | None, seed: int | None = None) -> Iterator[None]:
    """The CPU setup of one training run, undone after it where torch allows.

    Denormal floats (e.g. Adam's squared tiny gradients) are ~100x slower on x86 CPUs;
    flushing them to zero made a tiny-model step 4x faster here and changes no result that
    matters. That setting is process-wide (torch has no getter to restore it). ``threads``
    (None = leave as is) sets torch's intra-op threads for the run. The global RNG is forked,
    so seeding inside (with ``seed`` here, or per step by the loop) does not leak to the caller.
    """
    torch.set_flush_denormal(True)
    prev_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(prev_threads)


# ---------------------------------------------------------------- optimiser
def decays(p: Tensor) -> bool:
    """Weight decay applies to matrices only, not to 1-D biases, norms, mask or CLS vectors."""
    return p.ndim >= 2


def optimizer_step(
    loss: Tensor,
    opt: torch.optim.Optimizer,
    params: Iterable[Tensor],
    grad_clip: float,
    *,
    scaler: torch.amp.GradScaler | None = None,
    sum_grads: bool = False,
) -> bool:
    """Backward ``loss``, clip the global gradient norm of ``params`` to ``grad_clip``
    (0 = no clipping) and step ``opt``; returns whether the step was taken.

    ``sum_grads`` (data parallelism, each rank's loss a part of the global one): the gradients
    are summed over ranks before clipping, so every rank clips and steps identically.
    ``scaler`` (fp16): backward of the scaled loss, unscale before clipping (the threshold is
    in true gradient units); the scaler skips a step whose gradients hold inf/NaN and lowers
    its scale, and this returns False. Without either, the plain single-process step.
    """
    opt.zero_grad(set_to_none=True)
    if scaler is None and not sum_grads:
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        return True
    params = list(params)
    (loss if scaler is None else scaler.scale(loss)).backward()
    if sum_grads:
        sum_gradients_(params)
    if scaler is not None:
        scaler.unscale_(opt)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is None:
        opt.step()
        return True
    scale = scaler.get_scale()
    scaler.step(opt)
    scaler.update()
    return scaler.get_scale() >= scale  # the scale only drops after an inf/NaN step


# ---------------------------------------------------------------- augmentation
def random_shift(
    x: Tensor, max_shift: int, generator: torch.Generator, direction: int = 1
) -> Tensor:
    """Translate each (C, H, W) image of ``x`` by up to ``max_shift`` pixels in y and x, the
    edges replicated; the offsets come from ``generator``, two per image.

    ``direction`` -1 moves the content the other way for the same draws: fine-tuning has
    always shifted that way and keeps doing so, so its results stay bitwise the same.
    """
    if max_shift == 0:
        return x
    if direction not in (1, -1):
        raise ValueError(f"direction must be 1 or -1, got {direction}")
    b, _, h, w = x.shape
    dy = torch.randint(-max_shift, max_shift + 1, (b, 1), generator=generator) * direction
    dx = torch.randint(-max_shift, max_shift + 1, (b, 1), generator=generator) * direction
    rows = (torch.arange(h)[None] - dy).clamp(0, h - 1).to(x.device)
    cols = (torch.arange(w)[None] - dx).clamp(0, w - 1).to(x.device)
    bi = torch.arange(b, device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
