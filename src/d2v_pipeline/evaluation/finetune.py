"""End-to-end fine-tuning: the whole encoder plus a linear head on pooled final features
(spec §6 rec. (b)).

Fairness (calibration.md, "fine-tuning budget trap"): the step budget depends only on the
config and the size of the labelled subset, never on the encoder, so every arm (data2vec,
masked reconstruction, scratch = the same encoder class at random init) gets the same
budget; early stopping on validation accuracy lets each arm stop when it has converged,
and the best-validation weights are restored before the single test evaluation. Every arm
trains the same parameter set, the whole encoder front-end included (docs/protocol.md): a
frozen front-end would leave ``scratch`` with random conv features while the pretrained
arms keep learned ones.

Where and how the run executes (device, precision, torch.compile, data parallelism) is the
caller's :class:`~d2v_pipeline.data2vec.runtime.Runtime`; the default ``Runtime()`` is one CPU
process in fp32 and runs exactly the single-process code (bitwise the same results as before
the runtime existed). Under a process group of W > 1 ranks (``runtime.launch`` or torchrun),
every rank draws the same global batch (permutation and augmentation from the same seeded
generator), trains on its part of the rows, and the summed gradients equal the one-process
gradient up to float reassociation; see :func:`finetune`.
"""

from __future__ import annotations

import copy
import logging
import math
import re
import time
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from d2v_pipeline.data2vec import training_utils as shared  # the loops' common helpers
from d2v_pipeline.data2vec.config_base import from_dict
from d2v_pipeline.data2vec.modalities import MODALITIES
from d2v_pipeline.data2vec.runtime import (
    DistInfo,
    Runtime,
    all_reduce_sum_,
    autocast,
    collective_device,
    dist_info,
    grad_scaler,
    resolve_device,
    shard_slice,
)
from d2v_pipeline.evaluation.features import (
    POOL_MODES,
    as_tensor,
    check_attention_mask,
    inference_batches,
    module_device,
    pool_output,
    restore_order,
    trim_padding,
)
from d2v_pipeline.evaluation.metrics import classification_metrics

log = logging.getLogger(__name__)

HEAD_NORMS = ("none", "batch", "layer")
_BLOCK_RE = re.compile(r"^((?:.*?\.)??)blocks\.(\d+)\.")


@dataclass
class FinetuneConfig:
    """Fine-tuning hyper-parameters; every field is a documented, overridable default.

    Budget: ``epochs`` passes over the labelled subset, raised to at least ``min_steps``
    optimiser steps (so a 1 % subset of a few dozen examples still trains) and capped at
    ``max_steps`` (so the 100 % subset stays affordable). Early stopping ends a run after
    ``patience`` evaluations without a new best validation accuracy, but never before
    ``min_steps``.
    """

    epochs: int = 100
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    layer_decay: float = 1.0  # 1.0 = one lr for all layers; BEiT-style decay below 1
    warmup_fraction: float = 0.1
    min_lr: float = 1e-6
    label_smoothing: float = 0.0
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    beta1: float = 0.9
    beta2: float = 0.999
    patience: int | None = 20  # evaluations without improvement; None disables
    eval_every: int = 1  # epochs between validation passes
    # ... and at least this many steps: tiny subsets (2 steps/epoch) would otherwise spend
    # most of their time on validation passes
    eval_min_interval_steps: int = 20
    min_steps: int = 300
    max_steps: int | None = 3000
    time_budget_s: float | None = None  # wall-clock cap; makes runs machine-dependent
    pool: str = "mean"
    head_norm: str = "none"  # "none", "batch" (no affine, as MAE's probe head) or "layer"
    augment: bool = True
    image_max_shift: int = 2  # pixels, random shift via replicate padding + crop
    speech_max_shift_s: float = 0.1  # circular time shift, seconds
    speech_gain_db: float = 2.0  # uniform gain in [-g, +g] dB
    sample_rate: int = 16000
    eval_batch_size: int = 256
    head_init_std: float = 0.01
    seed: int = 0
    # device, threads, precision, compile and processes: the caller's Runtime (one place)

    def __post_init__(self) -> None:
        # Ranges are declared once, in the parameter schema (d2v_pipeline.schema.finetune);
        # kept: the run divides by these (steps per epoch, epochs between validations, batches).
        for key in ("batch_size", "eval_every", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"FinetuneConfig.{key} must be >= 1, got {getattr(self, key)}")

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> FinetuneConfig:
        """Build from a parameters dict; an unknown key or a wrongly typed value is a
        ``ConfigError`` (a ValueError) naming it (the data2vec configs' own ``from_dict``)."""
        return from_dict(cls, params, "FinetuneConfig")

    def planned_steps(self, n_train: int) -> int:
        """Optimiser steps for a labelled subset of ``n_train`` examples (same for every arm)."""
        if n_train < 1:
            raise ValueError(f"n_train must be >= 1, got {n_train}")
        per_epoch = math.ceil(n_train / min(self.batch_size, n_train))
        steps = max(self.epochs * per_epoch, self.min_steps)
        return steps if self.max_steps is None else min(steps, self.max_steps)


@dataclass
class FinetuneResult:
    """Test metrics and per-example test predictions of the best-validation weights, plus
    the validation curve."""

    test_accuracy: float
    test_macro_f1: float
    confusion: list[list[int]]
    best_epoch: int
    best_step: int
    best_val_accuracy: float
    curve: list[dict[str, float]]
    steps: int
    planned_steps: int
    epochs_run: float
    stop_reason: str  # "budget", "early_stopping" or "time_budget"
    train_seconds: float  # wall time of the training loop, validation passes included
    eval_seconds: float  # of which validation passes
    steps_per_second: float  # optimiser steps per second, validation excluded
    n_train: int
    test_predictions: np.ndarray | None = field(default=None, repr=False, compare=False)
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the model and the per-example test predictions are left out)."""
        skip = ("model", "test_predictions")
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


class Classifier(nn.Module):
    """Encoder + linear head on pooled final features (pool: padding-aware mean or CLS).

    ``head_norm`` optionally normalises the pooled vector first: "batch" (BatchNorm without
    affine, per feature over the batch, like MAE's linear-probe head) or "layer".
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        pool: str = "mean",
        init_std: float = 0.01,
        head_norm: str = "none",
    ) -> None:
        super().__init__()
        dim = getattr(encoder, "dim", None)
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"encoder must expose an int `dim` (feature width), got {dim!r}")
        if pool not in POOL_MODES:
            raise ValueError(f"unknown pool {pool!r}; expected one of {POOL_MODES}")
        if head_norm not in HEAD_NORMS:
            raise ValueError(f"unknown head_norm {head_norm!r}; expected one of {HEAD_NORMS}")
        self.encoder = encoder
        self.pool = pool
        self.head_norm: nn.Module = {
            "none": nn.Identity(),
            "batch": nn.BatchNorm1d(dim, affine=False),
            "layer": nn.LayerNorm(dim),
        }[head_norm]
        self.head = nn.Linear(dim, num_classes)
        # small head init so the pretrained features are not swamped early (MAE/BEiT practice)
        nn.init.trunc_normal_(self.head.weight, std=init_std)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        out = self.encoder(x, attention_mask=attention_mask)
        return self.head(self.head_norm(pool_output(out, self.pool, attention_mask)))


# ---------------------------------------------------------------- data parallelism


class _SumOverRanks(torch.autograd.Function):
    """All-reduce SUM with a gradient: every rank's output depends on every rank's input, so
    the backward pass sums the incoming gradients over the ranks too."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` whose training statistics span the global batch of all ranks.

    Under data parallelism each rank sees only its rows; per-rank statistics would normalise
    differently than one process does and leave different running statistics on each rank
    (so validation, and with it early stopping, would disagree between ranks).
    ``torch.nn.SyncBatchNorm`` solves this on GPUs only: this torch refuses CPU input
    ("SyncBatchNorm expected input tensor to be on GPU"), so the head's norm (pooled
    (B, D) vectors: two small all-reduces per step) syncs its statistics itself, on any
    backend. Outside a process group, in eval mode, or with one rank it is ``BatchNorm1d``.
    The state-dict keys are ``BatchNorm1d``'s.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or dist_info().world_size == 1:
            return super().forward(x)
        return self._global_forward(x)

    @torch.compiler.disable  # collectives: run eagerly even inside a compiled classifier
    def _global_forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        x32 = x.float()  # statistics in fp32, also under autocast
        # two passes (mean, then squared deviations), like the one-process kernel, rather
        # than E[x^2] - E[x]^2, which cancels badly when |mean| >> std
        local = torch.cat([x32.sum(dim=0), x32.new_tensor([x.shape[0]])])
        summed = _SumOverRanks.apply(local)
        count = summed[-1]
        mean = summed[:-1] / count
        var = _SumOverRanks.apply(((x32 - mean) ** 2).sum(dim=0)) / count
        out = (x32 - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                if self.momentum is None:  # cumulative average, as BatchNorm1d does
                    factor = 1.0 / float(self.num_batches_tracked)
                else:
                    factor = self.momentum
                n = float(count)
                # running variance: unbiased, as BatchNorm1d keeps it
                unbiased = var.detach() * (n / max(n - 1.0, 1.0))
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
        return out


def _swap_batch_norm(model: Classifier, kind: type[nn.BatchNorm1d], device: torch.device) -> None:
    """Make a "batch" head norm a ``kind`` (:class:`GlobalBatchNorm1d` for a data-parallel
    run, ``BatchNorm1d`` again after it), keeping its state; other head norms are left."""
    old = model.head_norm
    if not isinstance(old, nn.BatchNorm1d) or type(old) is kind:
        return
    new = kind(
        old.num_features, eps=old.eps, momentum=old.momentum, affine=old.affine,
        track_running_stats=old.track_running_stats,
    )  # fmt: skip
    new.load_state_dict(old.state_dict())
    model.head_norm = new.to(device).train(old.training)


def _broadcast_state(model: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank, as DDP does when it wraps a model:
    the ranks must start from the same weights (they do when every rank builds the same
    encoder and seeds the head alike; this makes it certain)."""
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, src=0)


def _gather_rows(local: np.ndarray, n: int, info: DistInfo, device: torch.device) -> np.ndarray:
    """Per-rank int64 results for the rows :func:`shard_slice` gave each rank, concatenated
    back into row order on every rank (shards differ in length by at most one row, so each
    is padded to the longest for ``all_gather``)."""
    longest = -(-n // info.world_size)
    buf = torch.full((longest,), -1, dtype=torch.int64, device=device)
    buf[: len(local)] = torch.from_numpy(local).to(device)
    parts = [torch.empty_like(buf) for _ in range(info.world_size)]
    dist.all_gather(parts, buf)
    shards = [shard_slice(n, info._replace(rank=r)) for r in range(info.world_size)]
    sizes = [s.stop - s.start for s in shards]
    return np.concatenate([p[:k].cpu().numpy() for p, k in zip(parts, sizes, strict=True)])


# ---------------------------------------------------------------- optimiser and schedule


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float, min_lr: float) -> float:
    """Linear warmup to ``peak`` over ``warmup_steps``, then cosine down to ``min_lr``."""
    return shared.warmup_cosine_lr(step, total_steps, warmup_steps, peak, min_lr)


def encoder_layer_ids(encoder: nn.Module) -> dict[str, int]:
    """Layer id per trainable encoder parameter for layer-wise lr decay.

    ``blocks.<i>.`` parameters get id i+1. The other parameters of the module that holds
    ``blocks`` (e.g. ``transformer.norm``, the final LayerNorm) sit after the blocks: id
    depth+1, full lr. Everything outside that module is the front-end (patch/conv/token
    embedding, positions, mask/CLS tokens): id 0, the deepest decay. When ``blocks`` is a
    top-level attribute, parameters registered after the last block count as "after".
    """
    depth = getattr(encoder, "depth", None)
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"layer_decay < 1 needs an encoder with an int `depth`, got {depth!r}")
    names = [n for n, p in encoder.named_parameters() if p.requires_grad]
    matches = {n: _BLOCK_RE.match(n) for n in names}
    block_names = [n for n in names if matches[n]]
    if not block_names:
        raise ValueError("layer_decay < 1 but no encoder parameter name contains 'blocks.<i>.'")
    prefix = matches[block_names[0]].group(1)
    last_block = names.index(block_names[-1])
    ids: dict[str, int] = {}
    for i, name in enumerate(names):
        m = matches[name]
        if m:
            ids[name] = int(m.group(2)) + 1
        elif (prefix and name.startswith(prefix)) or (not prefix and i > last_block):
            ids[name] = depth + 1
        else:
            ids[name] = 0
    n_blocks = max(ids[n] for n in block_names)
    if n_blocks != depth:
        raise ValueError(f"encoder.depth is {depth} but its parameters name {n_blocks} blocks")
    return ids


def build_param_groups(model: Classifier, weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW groups: no decay on 1-D tensors (biases, norms, tokens; spec §9) and, when
    ``layer_decay < 1``, lr scale ``layer_decay ** (depth + 1 - layer_id)``; head at full lr."""
    layer_ids: dict[str, int] = {}
    depth = 0
    if layer_decay < 1.0:
        layer_ids = encoder_layer_ids(model.encoder)
        depth = int(model.encoder.depth)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # head and head_norm: full lr
        layer = layer_ids.get(name.removeprefix("encoder."), depth + 1)
        decay = shared.decays(p)
        key = (layer, decay)
        if key not in groups:
            scale = layer_decay ** (depth + 1 - layer) if layer_decay < 1.0 else 1.0
            groups[key] = {
                "params": [],
                "names": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr_scale": scale,
                "layer_id": layer,
            }
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


# ---------------------------------------------------------------- augmentation


def shift_images(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Random translation of each (C, H, W) image by up to ``max_shift`` px in x and y
    (edges replicated, so the background value is kept); the pretraining shift."""
    out = shared.random_shift(x, max_shift, generator, direction=-1)
    return out.clone(memory_format=torch.contiguous_format)  # its layout as before, too


def shift_and_gain_speech(
    x: Tensor, max_shift: int, gain_db: float, generator: torch.Generator
) -> Tensor:
    """Circular time shift of up to ``max_shift`` samples and a uniform gain in ±``gain_db``."""
    b, s = x.shape
    out = x
    if max_shift > 0:
        shifts = torch.randint(-max_shift, max_shift + 1, (b,), generator=generator)
        idx = (torch.arange(s)[None, :] - shifts[:, None]) % s
        out = out.gather(1, idx)
    if gain_db > 0:
        db = (torch.rand(b, generator=generator) * 2 - 1) * gain_db
        out = out * (10.0 ** (db / 20.0)).to(out.dtype)[:, None]
    return out


def augment_batch(
    x: Tensor, modality: str, cfg: FinetuneConfig, generator: torch.Generator
) -> Tensor:
    """Per-modality training augmentation (text: none)."""
    if not cfg.augment:
        return x
    if modality == "image":
        return shift_images(x, cfg.image_max_shift, generator)
    if modality == "speech":
        max_shift = round(cfg.speech_max_shift_s * cfg.sample_rate)
        return shift_and_gain_speech(x, max_shift, cfg.speech_gain_db, generator)
    return x


# ---------------------------------------------------------------- data handling


def _split(split: Any, name: str, num_classes: int) -> tuple[Tensor, Tensor, Tensor | None]:
    if not isinstance(split, tuple | list) or len(split) not in (2, 3):
        raise ValueError(f"{name} must be a tuple (x, y) or (x, y, attention_mask)")
    x = as_tensor(split[0], f"{name} x")
    y = as_tensor(split[1], f"{name} y")
    am = None
    if len(split) == 3 and split[2] is not None:
        am = as_tensor(split[2], f"{name} attention_mask").bool()
    if y.ndim != 1:
        raise ValueError(f"{name} y must be 1-D, got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"{name} y must hold integer class ids, got {y.dtype}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{name} has {x.shape[0]} inputs but {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        row = int(torch.nonzero(bad)[0])
        raise ValueError(
            f"{name} y[{row}] = {int(y[row])} is outside the class range 0..{num_classes - 1}"
        )
    check_attention_mask(x, am, f"{name} x")
    return x, y.long(), am


def infer_modality(encoder: nn.Module, x: Tensor) -> str:
    """The encoder's ``modality``, or a guess from the input layout."""
    modality = getattr(encoder, "modality", None)
    if modality is None:
        if x.ndim == 4:
            modality = "image"
        elif x.ndim == 2:
            modality = "speech" if x.is_floating_point() else "text"
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    return modality


def predict_classes(
    model: nn.Module,
    x: Tensor | np.ndarray,
    attention_mask: Tensor | np.ndarray | None = None,
    batch_size: int = 256,
    runtime: Runtime | None = None,
) -> np.ndarray:
    """Arg-max predictions of a classifier in eval mode (its mode is restored after), on the
    model's device; ``runtime`` sets the precision (autocast; None = fp32)."""
    xt = as_tensor(x, "x")
    am = None if attention_mask is None else as_tensor(attention_mask, "attention_mask").bool()
    check_attention_mask(xt, am)
    device = module_device(model)
    precision = autocast(runtime or Runtime(), device)
    was_training = model.training
    model.eval()
    preds = []
    batches = inference_batches(am, xt.shape[0], batch_size)
    try:
        with torch.inference_mode(), precision:
            for idx in batches:
                xb, amb = trim_padding(xt[idx], None if am is None else am[idx])
                amb = None if amb is None else amb.to(device)
                logits = model(xb.to(device), attention_mask=amb)
                preds.append(logits.argmax(dim=-1).cpu().numpy())
    finally:
        model.train(was_training)
    return restore_order(batches, preds)


def _predict_split(
    model: nn.Module,
    split: tuple[Tensor, Tensor, Tensor | None],
    batch_size: int,
    runtime: Runtime,
    info: DistInfo,
) -> np.ndarray:
    """Predictions for a whole split, on every rank: one process predicts every row; W ranks
    each predict their :func:`shard_slice` of the rows and gather the rest (so every rank
    sees the same accuracy and takes the same early-stopping decision)."""
    x, _, am = split
    if info.world_size == 1:
        return predict_classes(model, x, am, batch_size, runtime)
    rows = shard_slice(x.shape[0], info)
    if rows.stop == rows.start:  # fewer rows than ranks: nothing to predict here
        local = np.zeros(0, dtype=np.int64)
    else:
        amr = None if am is None else am[rows]
        local = predict_classes(model, x[rows], amr, batch_size, runtime)
    return _gather_rows(local, x.shape[0], info, collective_device())


# ---------------------------------------------------------------- training


def finetune(
    encoder: nn.Module,
    num_classes: int,
    train: tuple,
    val: tuple,
    test: tuple,
    cfg: FinetuneConfig | None = None,
    progress: bool = True,
    runtime: Runtime | None = None,
) -> FinetuneResult:
    """Fine-tune a copy of ``encoder`` with a linear head; early-stop on val; test once.

    Args:
        encoder: a contract-following encoder (not modified: a deep copy is trained, every
            parameter of it, the front-end included).
        num_classes: C; labels must lie in 0..C-1.
        train, val, test: ``(x, y)`` or ``(x, y, attention_mask)`` (text), tensors or arrays.
        cfg: hyper-parameters and budget; default ``FinetuneConfig()``.
        progress: show a tqdm bar with loss, val accuracy and ETA (rank 0 only).
        runtime: device, threads, precision (bf16 autocast on CPU/CUDA, fp16 with a gradient
            scaler on CUDA; the loss is reduced in fp32), ``compile`` (torch.compile of the
            classifier's training forward; predictions run eagerly). ``workers`` is not
            used: the splits are in-memory tensors. None = ``Runtime()``: one CPU process in
            fp32, the same code and the same numbers as before there was a runtime.
    Returns:
        FinetuneResult with the test metrics and per-example test predictions of the
        best-validation weights; ``model`` holds that classifier (uncompiled).

    Data parallelism: called on every rank of a process group with W > 1 ranks (started by
    ``runtime.launch`` or torchrun), each rank holding all three splits. Step s uses the
    same global batch as one process (every rank draws the permutation and the augmentation
    for the whole batch from the same seeded generator) and rank r trains on its rows
    ``shard_slice(B)``; its loss is its summed cross-entropy over the GLOBAL batch size, and
    the gradients are summed over ranks, which is the one-process gradient up to float
    reassociation. A "batch" head norm uses global statistics (:class:`GlobalBatchNorm1d`).
    Validation and test rows are split over the ranks and the predictions gathered, so all
    ranks take the same early-stopping decision and return the same result (write files on
    rank 0 only). Deviation: dropout (and layerdrop) cannot be drawn per example cheaply,
    so each rank seeds them from (seed, "dropout", step, rank): deterministic for a given
    world size, but a 2-process run equals a 1-process run only without them.
    """
    cfg = cfg or FinetuneConfig()
    rt = runtime or Runtime()
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    xtr, ytr, amtr = _split(train, "train", num_classes)
    if xtr.shape[0] < 2:
        raise ValueError(f"train has {xtr.shape[0]} example(s); fine-tuning needs at least 2")
    xva, yva, amva = _split(val, "val", num_classes)
    xte, yte, amte = _split(test, "test", num_classes)
    modality = infer_modality(encoder, xtr)

    with shared.training_run(rt.threads, seed=cfg.seed):  # seeding does not leak to the caller
        return _run(
            encoder, num_classes, modality, (xtr, ytr, amtr), (xva, yva, amva),
            (xte, yte, amte), cfg, progress, rt,
        )  # fmt: skip


def _run(
    encoder: nn.Module,
    num_classes: int,
    modality: str,
    train: tuple[Tensor, Tensor, Tensor | None],
    val: tuple[Tensor, Tensor, Tensor | None],
    test: tuple[Tensor, Tensor, Tensor | None],
    cfg: FinetuneConfig,
    progress: bool,
    rt: Runtime,
) -> FinetuneResult:
    device = resolve_device(rt)
    info = dist_info()
    world = info.world_size
    model = Classifier(
        copy.deepcopy(encoder), num_classes, cfg.pool, cfg.head_init_std, cfg.head_norm
    ).to(device)
    if world > 1:
        _swap_batch_norm(model, GlobalBatchNorm1d, device)
        _broadcast_state(model)
    # compiled wrapper for the calls; ``model`` itself stays plain (state-dict keys, pickling)
    forward = torch.compile(model) if rt.compile else model
    params = list(model.parameters())
    groups = build_param_groups(model, cfg.weight_decay, cfg.layer_decay)
    opt = torch.optim.AdamW(
        [{k: v for k, v in g.items() if k != "names"} for g in groups],
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        fused=True,  # one kernel for all parameters: ~25% faster steps for tiny models on CPU
    )
    scaler = grad_scaler(rt, device)
    gen = shared.seeded_generator(cfg.seed)

    xtr, ytr, amtr = train
    n = xtr.shape[0]
    batch = min(cfg.batch_size, n)
    per_epoch = math.ceil(n / batch)
    if world > 1 and n // per_epoch < world:
        raise ValueError(
            f"FinetuneConfig.batch_size {cfg.batch_size} on {n} train examples gives batches "
            f"of {n // per_epoch} rows, fewer than the {world} processes; "
            "lower runtime.nproc_per_node"
        )
    total = cfg.planned_steps(n)
    warmup = round(cfg.warmup_fraction * total)
    if info.is_main:
        log.info(
            "fine-tuning %s: %d train examples, %d steps planned (%d/epoch), batch %d, lr %g"
            "%s", modality, n, total, per_epoch, batch, cfg.lr,
            "" if world == 1 else f", {world} processes",
        )  # fmt: skip

    curve: list[dict[str, float]] = []
    best_acc, best_epoch, best_step = -1.0, 0, 0
    best_state: dict[str, Tensor] | None = None
    evals_since_best = 0
    step, epoch, last_eval_step = 0, 0, 0
    stop_reason = "budget"
    losses: list[float] = []
    eval_seconds = 0.0
    start = time.perf_counter()
    bar = tqdm(
        total=total, desc=f"finetune[{modality}]", unit="step",
        disable=not progress or not info.is_main,
    )  # fmt: skip
    try:
        while step < total and stop_reason == "budget":
            epoch += 1
            model.train()
            # ceil(n / batch) near-equal batches: no tiny trailing batch (BatchNorm head, noise)
            for idx in torch.tensor_split(torch.randperm(n, generator=gen), per_epoch):
                if step >= total:
                    break
                xb, amb = trim_padding(xtr[idx], None if amtr is None else amtr[idx])
                # the global batch's augmentation, drawn alike on every rank
                xb = augment_batch(xb, modality, cfg, gen)
                yb = ytr[idx]
                if world > 1:
                    rows = shard_slice(len(idx), info)
                    xb, yb = xb[rows], yb[rows]
                    amb = None if amb is None else amb[rows]
                    # dropout/layerdrop per (step, rank): the deviation in finetune's docstring
                    torch.manual_seed(shared.derive_seed(cfg.seed, "dropout", step, info.rank))
                xb = xb.to(device)
                amb = None if amb is None else amb.to(device)
                if rt.compile:
                    # trimmed text is a strided view: one layout, so one compiled graph
                    xb = xb.contiguous()
                    amb = None if amb is None else amb.contiguous()
                lr = lr_at(step, total, warmup, cfg.lr, cfg.min_lr)
                for g in opt.param_groups:
                    g["lr"] = lr * g["lr_scale"]
                with autocast(rt, device):
                    logits = forward(xb, attention_mask=amb)
                # the loss in fp32 (a no-op cast for fp32 logits)
                logits = logits.float()
                if world == 1:
                    loss = F.cross_entropy(
                        logits, yb.to(device), label_smoothing=cfg.label_smoothing
                    )
                    global_loss = loss
                else:
                    # summed over this rank's rows / the global batch size: the ranks' losses
                    # (and their gradients) add up to the one-process mean
                    loss = F.cross_entropy(
                        logits, yb.to(device), reduction="sum",
                        label_smoothing=cfg.label_smoothing,
                    ) / len(idx)  # fmt: skip
                    global_loss = all_reduce_sum_(loss.detach().clone())
                if not torch.isfinite(global_loss):  # the same value, hence verdict, on all ranks
                    raise FloatingPointError(
                        f"fine-tuning loss is {global_loss.item()} at step {step} "
                        f"(epoch {epoch}); lower FinetuneConfig.lr"
                    )
                # fp16: a step with inf/NaN gradients is skipped by the scaler (on every rank
                # alike: the summed gradients are the same everywhere) and still counts
                shared.optimizer_step(
                    loss, opt, params, cfg.grad_clip, scaler=scaler, sum_grads=world > 1
                )
                step += 1
                losses.append(global_loss.item())
                bar.update(1)
                if cfg.time_budget_s is not None and _out_of_time(
                    start, cfg.time_budget_s, world, collective_device()
                ):
                    stop_reason = "time_budget"
                    break
            last = step >= total or stop_reason != "budget"
            due = (
                epoch % cfg.eval_every == 0 and step - last_eval_step >= cfg.eval_min_interval_steps
            )
            if not (due or last):
                continue
            last_eval_step = step
            eval_start = time.perf_counter()
            val_pred = _predict_split(model, val, cfg.eval_batch_size, rt, info)
            val_acc = float(np.mean(val_pred == val[1].numpy()))
            eval_seconds += time.perf_counter() - eval_start
            curve.append(
                {
                    "epoch": epoch,
                    "step": step,
                    "train_loss": float(np.mean(losses)),
                    "val_acc": val_acc,
                    "lr": lr,
                }
            )
            losses = []
            bar.set_postfix(loss=f"{curve[-1]['train_loss']:.3f}", val=f"{val_acc:.3f}")
            if val_acc > best_acc:
                # strict '>': on a tie keep the earlier (less trained) weights
                best_acc, best_epoch, best_step, evals_since_best = val_acc, epoch, step, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                evals_since_best += 1
            if (
                cfg.patience is not None
                and evals_since_best >= cfg.patience
                and step >= cfg.min_steps
                and step < total
                and stop_reason == "budget"
            ):
                stop_reason = "early_stopping"
    finally:
        bar.close()
    seconds = time.perf_counter() - start

    assert best_state is not None
    model.load_state_dict(best_state)
    if world > 1:  # the returned classifier is the same whatever the world size
        _swap_batch_norm(model, nn.BatchNorm1d, device)
    # the one and only test evaluation, on the best-validation weights
    preds = _predict_split(model, test, cfg.eval_batch_size, rt, info)
    metrics = classification_metrics(test[1].numpy(), preds, num_classes)
    if info.is_main:
        log.info(
            "fine-tuned %d steps in %.1fs (%s); best val %.4f at epoch %d; test acc %.4f",
            step, seconds, stop_reason, best_acc, best_epoch, metrics["accuracy"],
        )  # fmt: skip
    model.eval()
    return FinetuneResult(
        test_accuracy=metrics["accuracy"],
        test_macro_f1=metrics["macro_f1"],
        confusion=metrics["confusion"],
        best_epoch=best_epoch,
        best_step=best_step,
        best_val_accuracy=best_acc,
        curve=curve,
        steps=step,
        planned_steps=total,
        epochs_run=step / per_epoch,
        stop_reason=stop_reason,
        train_seconds=seconds,
        eval_seconds=eval_seconds,
        steps_per_second=step / max(seconds - eval_seconds, 1e-9),
        n_train=n,
        test_predictions=np.asarray(preds, dtype=np.int64),
        model=model,
    )


def _out_of_time(start: float, budget_s: float, world: int, device: torch.device) -> bool:
    """Whether the wall-clock budget is spent; with W ranks, whether ANY rank's clock says
    so (their clocks differ slightly, and all ranks must stop after the same step)."""
    over = time.perf_counter() - start > budget_s
    if world == 1:
        return over
    return bool(all_reduce_sum_(torch.tensor([float(over)], device=device)) > 0)
