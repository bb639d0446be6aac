"""One pretraining loop for any PretrainModel: AdamW, warmup + cosine, clipping, EMA hook,
metrics history, collapse monitor (spec §9), atomic checkpoints and bitwise resume.

Determinism: every random draw of step ``s`` comes from generators seeded by (seed, s) (masks,
augmentation, dropout) or (seed, epoch) (data order), and the learning rate is a pure function
of ``s``. A checkpoint therefore only needs the step, the model (student, head, teacher), the
optimiser state and the metric accumulators; a resumed run ends with the same weights as an
uninterrupted one (same machine, same thread count, same world size).

Where it runs is the :class:`~.runtime.Runtime`'s (None = one CPU process in fp32, the code
path of every earlier version, bitwise). Under data parallelism (a process group of W > 1,
started by :func:`~.runtime.launch` or torchrun) the global batch of step ``s`` is the same
as for one process; every rank draws the masks, noise and shifts of the whole global batch
from the same generators and trains on its rows (:class:`~.model_base.Shard`), its loss being
its rows' sum over the GLOBAL count, and the gradients are summed over ranks
(:func:`~.runtime.sum_gradients_`) before clipping: every rank then takes the same optimiser
and EMA step, the teacher stays bitwise identical across ranks, and the weights equal the
single-process ones up to float summation order. Dropout cannot be split per sample cheaply:
under W > 1 it is seeded by (seed, step, rank), deterministic for a given world size only.
Only rank 0 writes checkpoints (the others wait at a barrier).

Mixed precision (``runtime.precision``): the student's forward and loss run under autocast;
the teacher, its targets and their norms, the loss reduction, the EMA update and weights stay
fp32. fp16 (CUDA) scales the loss; a step whose gradients overflow is skipped by the scaler
and RETRIED with the lowered scale (same batch, masks and learning rate): ``step`` always
counts good optimiser steps, so a checkpoint never holds a skipped one (the retries are
counted in ``skipped_steps``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .checkpoint import (
    CHECKPOINT_FILE,
    CheckpointError,
    remove_stale_temp_files,
    resume_training_state,
    save_training_state,
)
from .config import ConfigError, TrainConfig, config_to_dict
from .model_base import Shard
from .models import PretrainModel
from .runtime import (
    DistInfo,
    Runtime,
    all_reduce_sum_,
    autocast,
    barrier,
    collective_device,
    dist_info,
    grad_scaler,
    resolve_device,
    shard_slice,
)
from .targets import std_from_moments
from .training_utils import (
    decays,
    derive_seed,
    optimizer_step,
    random_shift,
    seeded_generator,
    training_run,
    warmup_cosine_lr,
)

log = logging.getLogger(__name__)

# TrainConfig keys that may change between a run and its resumption (they do not change
# the weights: only speed, bookkeeping and monitoring). "threads" and "device" were train keys
# before they moved to the Runtime: older checkpoints still carry them.
_RESUME_MAY_CHANGE = frozenset(
    {
        "threads",
        "device",
        "checkpoint_every",
        "collapse_target_std",
        "collapse_pred_std",
        "collapse_grace_steps",
        "stop_on_collapse",
    }
)


@dataclass
class PretrainResult:
    history: list[dict[str, Any]]  # one row every log_every steps
    encoder_state: dict[str, Tensor]  # student encoder weights (what fine-tuning loads)
    model_state: dict[str, Tensor]  # full model incl. head and teacher
    collapsed: bool
    collapse_step: int | None
    wall_time_s: float  # training time summed over every (resumed) segment
    steps: int  # optimiser steps completed
    resumed_from_step: int | None = None
    flops_per_step: int = 0
    num_params: int = 0  # student encoder parameters
    info: dict[str, Any] = field(default_factory=dict)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over ``warmup_frac·steps`` then cosine to ``min_lr`` (step is 0-based)."""
    warmup = round(cfg.warmup_frac * cfg.steps)
    return warmup_cosine_lr(step, cfg.steps, warmup, cfg.lr, cfg.min_lr)


def build_optimizer(model: PretrainModel, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on 1-D parameters (biases, norms, mask/CLS vectors)."""
    decay, no_decay = [], []
    for _, p in model.named_trainable_parameters():
        (decay if decays(p) else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, foreach=True)


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> Tensor:
    """Indices of step ``step``: epoch-wise permutations seeded by (seed, epoch), last
    incomplete batch dropped."""
    per_epoch = n // batch_size
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=seeded_generator(seed, "data", epoch))
    return perm[k * batch_size : (k + 1) * batch_size]


def pack_sequences(x: Tensor, attention_mask: Tensor) -> Tensor:
    """Padded token rows -> rows of the same length holding only real tokens.

    The real tokens of every row (each row keeps its own ``<cls> ... <eos>``) are
    concatenated in row order and cut into rows of ``x.shape[1]``; the incomplete tail is
    dropped, and a row may end mid-sentence (RoBERTa's "full sentences" input, fairseq's
    ``sample_break_mode=complete`` for data2vec text). Short texts (our reviews: 32 of 64
    tokens on average) then fill every position of a step instead of half of it.
    """
    if attention_mask.shape != x.shape or attention_mask.dtype != torch.bool:
        raise ValueError(
            f"attention_mask must be bool {tuple(x.shape)}, got "
            f"{attention_mask.dtype} {tuple(attention_mask.shape)}"
        )
    seq_len = x.shape[1]
    tokens = x[attention_mask]  # row-major: the rows' real tokens, in order
    rows = tokens.numel() // seq_len
    if rows == 0:
        raise ValueError(f"{tokens.numel()} real tokens do not fill one row of {seq_len}")
    return tokens[: rows * seq_len].reshape(rows, seq_len)


def _validate_data(data: dict[str, Tensor], model: PretrainModel, cfg: TrainConfig) -> int:
    unknown = sorted(set(data) - {"x", "attention_mask"})
    if "x" not in data or unknown:
        raise ValueError(
            f"pretrain data needs key 'x' (+ optional 'attention_mask'); got {list(data)}"
        )
    x = data["x"]
    n = x.shape[0]
    if n < cfg.batch_size:
        raise ValueError(f"pretrain data has {n} rows < batch_size {cfg.batch_size}")
    am = data.get("attention_mask")
    if am is not None and (am.shape != x.shape or am.dtype != torch.bool):
        raise ValueError(
            f"attention_mask must be bool {tuple(x.shape)}, got {am.dtype} {tuple(am.shape)}"
        )
    model.modality_ops.check_inputs(model.encoder, x)
    if cfg.augment_shift and model.modality != "image":
        raise ConfigError("train.augment_shift applies to images only")
    return n


def _model_identity(model: PretrainModel) -> dict[str, Any]:
    return {
        "method": model.method,
        "modality": model.modality,
        "encoder": config_to_dict(model.encoder.cfg),
        "method_config": config_to_dict(model.cfg),
    }


def _check_resumable(
    meta: dict[str, Any], path: Path, model: PretrainModel, cfg: TrainConfig
) -> None:
    for key, value in _model_identity(model).items():
        if meta["model"].get(key) != value:
            raise CheckpointError(
                f"{path}: model {key} differs from the checkpoint's; refusing to resume"
            )
    old, new = meta["train_config"], config_to_dict(cfg)
    for key in sorted(set(old) | set(new)):
        if key not in _RESUME_MAY_CHANGE and old.get(key) != new.get(key):
            raise CheckpointError(
                f"{path}: train.{key} is {new.get(key)!r} but the checkpoint was made with "
                f"{old.get(key)!r}; use another checkpoint_dir or resume=False"
            )


def pretrain(
    model: PretrainModel,
    data: dict[str, Tensor],
    cfg: TrainConfig,
    checkpoint_dir: Path | None = None,
    resume: bool = True,
    progress: bool = True,
    callback: Callable[[int, PretrainModel], bool | None] | None = None,
    runtime: Runtime | None = None,
) -> PretrainResult:
    """Pretrain ``model`` on unlabelled ``data`` ({"x", optional "attention_mask"}).

    ``callback(step, model)`` runs at every logged step (``step % log_every == 0`` and the
    last step; ``step`` = optimiser steps done, model in train mode); returning True stops
    training there (``result.info["stopped_early"]``), e.g. an Optuna pruner. Under data
    parallelism it runs on every rank (check ``runtime.dist_info().is_main`` before writing
    anything) and training stops when any rank's call returns True.

    With ``checkpoint_dir`` a checkpoint is written every ``checkpoint_every`` steps and at the
    end; with ``resume`` an existing one is continued (same config required). Returns the
    history, the student encoder weights, the full model state and the collapse verdict.

    ``runtime`` (None = ``Runtime()``: CPU, fp32, threads left as they are): device, precision,
    compile and threads. Data parallelism is not started here: call ``pretrain`` through
    :func:`~.runtime.launch` (or under torchrun); inside a process group of W > 1 every rank
    runs it with the same arguments and ``data`` (see the module docstring).
    """
    n = _validate_data(data, model, cfg)
    if cfg.pack_sequences:
        if model.modality != "text" or "attention_mask" not in data:
            raise ConfigError("train.pack_sequences applies to text with an attention_mask only")
        data = {"x": pack_sequences(data["x"], data["attention_mask"])}
        n = _validate_data(data, model, cfg)
    rt = Runtime() if runtime is None else runtime
    with training_run(rt.threads):  # denormals flushed; per-step seeding does not leak
        return _run(model, data, n, cfg, checkpoint_dir, resume, progress, callback, rt)


def _resume_state(
    ckpt: Path | None,
    resume: bool,
    model: PretrainModel,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    scaler: torch.amp.GradScaler | None,
    info: DistInfo,
) -> dict[str, Any]:
    """Fresh loop state, or the one stored in the newest usable checkpoint (model and optimiser
    restored in place). A damaged checkpoint is moved aside with a warning and the previous
    one (or a fresh start) is used instead: see checkpoint.resume_training_state.

    Under data parallelism rank 0 resolves the checkpoint first (it alone cleans temp files and
    moves damaged ones aside), then the other ranks load the one it left; all must agree."""
    state: dict[str, Any] = {
        "step": 0,
        "history": [],
        "acc": {},  # metric sums since the last history row: {name: [sum, count]}
        "collapsed": False,
        "collapse_step": None,
        "elapsed_s": 0.0,
        "resumed_from_step": None,
    }
    required = [k for k in state if k != "resumed_from_step"] + ["model", "train_config"]
    found = None
    if ckpt is not None:
        for turn in (True, False):  # rank 0's turn, then the others'
            if info.is_main == turn:
                if info.is_main:
                    remove_stale_temp_files(ckpt.parent)
                if resume:
                    found = resume_training_state(
                        ckpt,
                        model,
                        opt,
                        check=lambda meta, path: _check_resumable(meta, path, model, cfg),
                        required=required,
                    )
            if info.world_size > 1:
                barrier()
    # bookkeeping added after the first checkpoints (absent from older ones)
    state["skipped_steps"] = 0
    if found is not None:
        meta, path = found
        state.update({k: meta[k] for k in state if k not in ("resumed_from_step", "skipped_steps")})
        state["skipped_steps"] = meta.get("skipped_steps", 0)
        state["resumed_from_step"] = state["step"]
        if scaler is not None and meta.get("grad_scaler"):
            scaler.load_state_dict(meta["grad_scaler"])
        if meta.get("world_size", 1) != info.world_size and state["step"] < cfg.steps:
            log.warning(
                "%s was written by a run of world size %s, resumed with %d: the run continues "
                "correctly, but is no longer bitwise reproducible by either world size",
                *(path, meta.get("world_size", 1), info.world_size),
            )
        if state["step"] > cfg.steps:
            raise CheckpointError(
                f"{path} is at step {state['step']} > train.steps {cfg.steps}: raise "
                f"train.steps, or delete {ckpt.parent} to start afresh"
            )
        if info.is_main:
            log.info(
                "resuming %s/%s from step %d (%s)",
                *(model.method, model.modality, state["step"], path),
            )
    if info.world_size > 1:
        _check_same_step(state["step"], info, ckpt)
    return state


def _check_same_step(step: int, info: DistInfo, ckpt: Path | None) -> None:
    """Every rank must resume from the same step (sum and sum of squares agree only then)."""
    t = torch.tensor([float(step), float(step) ** 2], dtype=torch.float64)
    total = all_reduce_sum_(t.to(collective_device())).cpu()
    w = info.world_size
    if total[0] != w * step or total[1] != w * float(step) ** 2:
        raise CheckpointError(
            f"rank {info.rank} resumed {ckpt} at step {step} but the other ranks did not: "
            "was the checkpoint directory changed during the start-up? Run again."
        )


def _global_metrics(loss: Tensor, stats: dict[str, Any]) -> dict[str, float]:
    """This rank's loss part and summable stats -> the global values, on every rank alike.

    One collective: floats (already divided by global counts) and the std moments are summed
    over ranks; the std stats are then computed from the summed moments."""
    floats = [(k, v) for k, v in stats.items() if not isinstance(v, Tensor)]
    moments = [(k, v) for k, v in stats.items() if isinstance(v, Tensor)]
    parts = [loss.detach().double().reshape(1)]
    parts += [torch.tensor([float(v)], dtype=torch.float64) for _, v in floats]
    parts += [m.double() for _, m in moments]
    device = collective_device()
    flat = all_reduce_sum_(torch.cat([p.to(device) for p in parts])).cpu()
    out = {"loss": float(flat[0])}
    out.update({k: float(flat[1 + i]) for i, (k, _) in enumerate(floats)})
    offset = 1 + len(floats)
    for k, m in moments:
        out[k] = std_from_moments(flat[offset : offset + m.numel()])
        offset += m.numel()
    return out


def _any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any rank."""
    t = torch.tensor([1.0 if flag else 0.0], device=collective_device())
    return bool(all_reduce_sum_(t).item() > 0)


def _train_step(
    model: PretrainModel,
    opt: torch.optim.Optimizer,
    params: list[Tensor],
    batch: dict[str, Tensor],
    cfg: TrainConfig,
    step: int,
    rt: Runtime,
    device: torch.device,
    scaler: torch.amp.GradScaler | None = None,
    shard: Shard | None = None,
    rank: int = 0,
) -> dict[str, float] | None:
    """Forward, backward, clip, optimiser step, EMA; all randomness derived from (seed, step)
    (and the rank, for dropout under data parallelism). Returns the step's global metrics, or
    None when the fp16 scaler skipped the step (nothing changed: no update, no EMA)."""
    if cfg.augment_shift and shard is None:  # a shard's global batch is shifted by the loop
        gen = seeded_generator(cfg.seed, "aug", step)
        batch["x"] = random_shift(batch["x"], cfg.augment_shift, gen)
    if shard is None:
        torch.manual_seed(derive_seed(cfg.seed, "dropout", step))  # dropout / layerdrop
    else:  # per-sample dropout streams would cost a pass per sample: one stream per rank
        torch.manual_seed(derive_seed(cfg.seed, "dropout", step, rank))
    gen = seeded_generator(cfg.seed, "mask", step)
    with autocast(rt, device):
        if shard is None:
            loss, stats = model.training_loss(batch, gen)
        else:
            loss, stats = model.training_loss(batch, gen, shard=shard)
    if shard is None:
        value = loss.detach().item()
        metrics = {"loss": value, **stats}
    else:
        metrics = _global_metrics(loss, stats)
        value = metrics["loss"]
    if not math.isfinite(value):
        raise FloatingPointError(f"non-finite loss {value} at step {step}")
    if not optimizer_step(
        loss, opt, params, cfg.grad_clip, scaler=scaler, sum_grads=shard is not None
    ):
        return None
    model.after_optimizer_step(step)
    return metrics


# fp16: consecutive skipped attempts at one step before giving up (each halves the scale:
# 2^-40 of the start means the gradients are not finite at any scale)
_MAX_SKIPS = 40


@contextmanager
def _compiled_student(model: PretrainModel, enabled: bool) -> Iterator[None]:
    """``torch.compile`` the student's transformer for the run (``runtime.compile``).

    The compiled function is set as the module's ``forward`` attribute and removed after the
    run: the module tree, the parameter names (state_dict keys, the EMA pairing) and the model
    handed back stay those of the plain model (``torch.compile(module)`` would wrap it as
    ``_orig_mod``). The teacher is not compiled (one forward per step, no backward)."""
    if not enabled:
        yield
        return
    transformer = model.encoder.transformer
    transformer.forward = torch.compile(transformer.forward)
    try:
        yield
    finally:
        del transformer.forward


def _run(
    model: PretrainModel,
    data: dict[str, Tensor],
    n: int,
    cfg: TrainConfig,
    checkpoint_dir: Path | None,
    resume: bool,
    progress: bool,
    callback: Callable[[int, PretrainModel], bool | None] | None,
    rt: Runtime,
) -> PretrainResult:
    info = dist_info()
    if cfg.batch_size < info.world_size:  # the same verdict on every rank, before any collective
        raise ConfigError(
            f"train.batch_size {cfg.batch_size} < world size {info.world_size}: every rank "
            "needs at least one row of the global batch"
        )
    device = resolve_device(rt)
    scaler = grad_scaler(rt, device)
    model.to(device).train()
    opt = build_optimizer(model, cfg)
    params = [p for _, p in model.named_trainable_parameters()]
    ckpt = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    state = _resume_state(ckpt, resume, model, opt, cfg, scaler, info)
    input_len = model.modality_ops.input_len(data["x"])
    flops = model.flops_per_step(cfg.batch_size, input_len)
    num_params = sum(p.numel() for p in model.encoder.parameters())
    if info.is_main:
        log.info(
            "pretraining %s/%s: %d encoder params, %d steps of %d, %.2f GFLOP/step%s",
            *(model.method, model.modality, num_params, cfg.steps, cfg.batch_size, flops / 1e9),
            "" if info.world_size == 1 else f", {info.world_size} ranks",
        )
    bar = tqdm(
        total=cfg.steps,
        initial=state["step"],
        disable=not progress or not info.is_main,
        desc=f"pretrain {model.method}/{model.modality}",
        unit="step",
        dynamic_ncols=True,
    )
    t_start = t_log = time.perf_counter()
    elapsed0, since_log = state["elapsed_s"], 0
    acc: dict[str, list[float]] = state["acc"]
    stop = state["collapsed"] and cfg.stop_on_collapse
    stopped_early = False
    step, skips = state["step"], 0
    with _compiled_student(model, rt.compile):
        while step < cfg.steps and not stop:
            lr = lr_at(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = batch_indices(step, n, cfg.batch_size, cfg.seed)
            shard = None
            if info.world_size == 1:
                batch = {k: v[idx].to(device) for k, v in data.items()}
            else:
                shard = _shard_batch(data, idx, cfg, step, info, device)
                batch = {k: shard.take(v) for k, v in shard.batch.items()}
            metrics = _train_step(
                model, opt, params, batch, cfg, step, rt, device, scaler, shard, info.rank
            )
            if metrics is None:  # fp16 overflow: retry this step with the lowered scale
                skips += 1
                state["skipped_steps"] += 1
                if skips > _MAX_SKIPS:
                    raise FloatingPointError(
                        f"fp16 gradients overflow at step {step} even at loss scale "
                        f"{scaler.get_scale() if scaler else 1.0}: use bf16 or fp32"
                    )
                continue
            step, since_log, skips = step + 1, since_log + 1, 0
            for key, value in metrics.items():
                if not math.isnan(value):
                    total = acc.setdefault(key, [0.0, 0])
                    total[0], total[1] = total[0] + value, total[1] + 1
            bar.update(1)
            state["step"] = step
            state["elapsed_s"] = elapsed0 + time.perf_counter() - t_start
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.perf_counter()
                row = {
                    "step": step,
                    "lr": lr,
                    "tau": model.ema_decay_at(step - 1),
                    "target_std": None,
                    "pred_std": None,
                    **{k: total / count for k, (total, count) in acc.items()},
                    "samples_per_s": since_log * cfg.batch_size / max(now - t_log, 1e-9),
                    "elapsed_s": state["elapsed_s"],
                }
                state["history"].append(row)
                acc.clear()
                t_log, since_log = now, 0
                shown = ("loss", "target_std", "pred_std")
                bar.set_postfix({k: f"{row[k]:.3g}" for k in shown if row.get(k) is not None})
                stop = _collapse_check(model, row, state, cfg, info.is_main)
                if callback is not None:
                    wants_stop = bool(callback(step, model))
                    if info.world_size > 1:
                        wants_stop = _any_rank(wants_stop)
                    if wants_stop:
                        stopped_early = stop = True
            every = cfg.checkpoint_every
            if ckpt is not None and (step == cfg.steps or stop or (every and step % every == 0)):
                if info.is_main:
                    meta = {
                        **state,
                        "model": _model_identity(model),
                        "train_config": config_to_dict(cfg),
                        "world_size": info.world_size,
                    }
                    if scaler is not None:
                        meta["grad_scaler"] = scaler.state_dict()
                    save_training_state(ckpt, model, opt, meta)
                if info.world_size > 1:
                    barrier()  # nobody runs ahead of (or returns before) the written state
    bar.close()
    if info.is_main:
        log.info(
            "pretrained %s/%s: %d steps in %.1f s%s",
            *(model.method, model.modality, step, state["elapsed_s"]),
            f" (COLLAPSED at step {state['collapse_step']})" if state["collapsed"] else "",
        )
    return PretrainResult(
        history=state["history"],
        encoder_state={k: v.detach().cpu().clone() for k, v in model.encoder.state_dict().items()},
        model_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        collapsed=state["collapsed"],
        collapse_step=state["collapse_step"],
        wall_time_s=state["elapsed_s"],
        steps=step,
        resumed_from_step=state["resumed_from_step"],
        flops_per_step=flops,
        num_params=num_params,
        info={
            "method": model.method,
            "modality": model.modality,
            "device": str(device),
            "stopped_early": stopped_early,
            "world_size": info.world_size,
            "precision": rt.precision,
            "skipped_steps": state["skipped_steps"],
        },
    )


def _shard_batch(
    data: dict[str, Tensor],
    idx: Tensor,
    cfg: TrainConfig,
    step: int,
    info: DistInfo,
    device: torch.device,
) -> Shard:
    """Step ``step``'s global batch (shifted as one process shifts it) and this rank's rows."""
    full = {k: v[idx] for k, v in data.items()}
    if cfg.augment_shift:
        gen = seeded_generator(cfg.seed, "aug", step)
        full["x"] = random_shift(full["x"], cfg.augment_shift, gen)
    return Shard(full, shard_slice(cfg.batch_size, info), device)


def _collapse_check(
    model: PretrainModel,
    row: dict[str, Any],
    state: dict[str, Any],
    cfg: TrainConfig,
    warn: bool = True,
) -> bool:
    """Spec §9: flag target std < 0.1 or prediction std < 0.01 after the grace period.
    Returns True when training should stop."""
    if not model.monitors_collapse or row["step"] <= cfg.collapse_grace_steps:
        return False
    t, p = row.get("target_std"), row.get("pred_std")
    low_t = t is not None and t < cfg.collapse_target_std
    low_p = p is not None and p < cfg.collapse_pred_std
    if (low_t or low_p) and not state["collapsed"]:
        state["collapsed"], state["collapse_step"] = True, row["step"]
        if warn:  # rank 0 only (every rank reaches the same verdict)
            log.warning(
                "COLLAPSE suspected in %s/%s at step %d: target std %s (min %s), prediction std "
                "%s (min %s). Spec §9 causes: lr too high or warmup too short, tau too low.",
                *(model.method, model.modality, row["step"], t, cfg.collapse_target_std),
                *(p, cfg.collapse_pred_std),
            )
    return (low_t or low_p) and cfg.stop_on_collapse
