"""One pretraining loop for any PretrainModel: AdamW, warmup + cosine, clipping, EMA hook,
metrics history, collapse monitor (spec §9), atomic checkpoints and bitwise resume.

Determinism: every random draw of step ``s`` comes from generators seeded by (seed, s) (masks,
augmentation, dropout) or (seed, epoch) (data order), and the learning rate is a pure function
of ``s``. A checkpoint therefore only needs the step, the model (student, head, teacher), the
optimiser state and the metric accumulators; a resumed run ends with the same weights as an
uninterrupted one (same machine, same thread count).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
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
from .models import PretrainModel
from .training_utils import (
    decays,
    derive_seed,
    optimizer_step,
    random_shift,
    resolve_device,
    seeded_generator,
    training_run,
    warmup_cosine_lr,
)

log = logging.getLogger(__name__)

# TrainConfig keys that may change between a run and its resumption (they do not change
# the weights: only speed, bookkeeping and monitoring).
_RESUME_MAY_CHANGE = frozenset(
    {
        "threads",
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
) -> PretrainResult:
    """Pretrain ``model`` on unlabelled ``data`` ({"x", optional "attention_mask"}).

    ``callback(step, model)`` runs at every logged step (``step % log_every == 0`` and the
    last step; ``step`` = optimiser steps done, model in train mode); returning True stops
    training there (``result.info["stopped_early"]``), e.g. an Optuna pruner.

    With ``checkpoint_dir`` a checkpoint is written every ``checkpoint_every`` steps and at the
    end; with ``resume`` an existing one is continued (same config required). Returns the
    history, the student encoder weights, the full model state and the collapse verdict.
    """
    n = _validate_data(data, model, cfg)
    if cfg.pack_sequences:
        if model.modality != "text" or "attention_mask" not in data:
            raise ConfigError("train.pack_sequences applies to text with an attention_mask only")
        data = {"x": pack_sequences(data["x"], data["attention_mask"])}
        n = _validate_data(data, model, cfg)
    with training_run(cfg.threads):  # denormals flushed; per-step seeding does not leak
        return _run(model, data, n, cfg, checkpoint_dir, resume, progress, callback)


def _resume_state(
    ckpt: Path | None,
    resume: bool,
    model: PretrainModel,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
) -> dict[str, Any]:
    """Fresh loop state, or the one stored in the newest usable checkpoint (model and optimiser
    restored in place). A damaged checkpoint is moved aside with a warning and the previous
    one (or a fresh start) is used instead: see checkpoint.resume_training_state."""
    state: dict[str, Any] = {
        "step": 0,
        "history": [],
        "acc": {},  # metric sums since the last history row: {name: [sum, count]}
        "collapsed": False,
        "collapse_step": None,
        "elapsed_s": 0.0,
        "resumed_from_step": None,
    }
    if ckpt is None:
        return state
    remove_stale_temp_files(ckpt.parent)
    if not resume:
        return state
    found = resume_training_state(
        ckpt,
        model,
        opt,
        check=lambda meta, path: _check_resumable(meta, path, model, cfg),
        required=[k for k in state if k != "resumed_from_step"] + ["model", "train_config"],
    )
    if found is None:
        return state
    meta, path = found
    state.update({k: meta[k] for k in state if k != "resumed_from_step"})
    state["resumed_from_step"] = state["step"]
    if state["step"] > cfg.steps:
        raise CheckpointError(
            f"{path} is at step {state['step']} > train.steps {cfg.steps}: raise train.steps, "
            f"or delete {ckpt.parent} to start afresh"
        )
    log.info("resuming %s/%s from step %d (%s)", model.method, model.modality, state["step"], path)
    return state


def _train_step(
    model: PretrainModel,
    opt: torch.optim.Optimizer,
    params: list[Tensor],
    batch: dict[str, Tensor],
    cfg: TrainConfig,
    step: int,
) -> dict[str, float]:
    """Forward, backward, clip, optimiser step, EMA; all randomness derived from (seed, step)."""
    if cfg.augment_shift:
        gen = seeded_generator(cfg.seed, "aug", step)
        batch["x"] = random_shift(batch["x"], cfg.augment_shift, gen)
    torch.manual_seed(derive_seed(cfg.seed, "dropout", step))  # dropout / layerdrop
    loss, stats = model.training_loss(batch, seeded_generator(cfg.seed, "mask", step))
    value = loss.detach().item()
    if not math.isfinite(value):
        raise FloatingPointError(f"non-finite loss {value} at step {step}")
    optimizer_step(loss, opt, params, cfg.grad_clip)
    model.after_optimizer_step(step)
    return {"loss": value, **stats}


def _run(
    model: PretrainModel,
    data: dict[str, Tensor],
    n: int,
    cfg: TrainConfig,
    checkpoint_dir: Path | None,
    resume: bool,
    progress: bool,
    callback: Callable[[int, PretrainModel], bool | None] | None = None,
) -> PretrainResult:
    device = resolve_device(cfg.device, "train.device")
    model.to(device).train()
    opt = build_optimizer(model, cfg)
    params = [p for _, p in model.named_trainable_parameters()]
    ckpt = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    state = _resume_state(ckpt, resume, model, opt, cfg)
    input_len = model.modality_ops.input_len(data["x"])
    flops = model.flops_per_step(cfg.batch_size, input_len)
    num_params = sum(p.numel() for p in model.encoder.parameters())
    log.info(
        "pretraining %s/%s: %d encoder params, %d steps of %d, %.2f GFLOP/step",
        *(model.method, model.modality, num_params, cfg.steps, cfg.batch_size, flops / 1e9),
    )
    bar = tqdm(
        total=cfg.steps,
        initial=state["step"],
        disable=not progress,
        desc=f"pretrain {model.method}/{model.modality}",
        unit="step",
        dynamic_ncols=True,
    )
    t_start = t_log = time.perf_counter()
    elapsed0, since_log = state["elapsed_s"], 0
    acc: dict[str, list[float]] = state["acc"]
    stop = state["collapsed"] and cfg.stop_on_collapse
    stopped_early = False
    step = state["step"]
    while step < cfg.steps and not stop:
        lr = lr_at(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = batch_indices(step, n, cfg.batch_size, cfg.seed)
        batch = {k: v[idx].to(device) for k, v in data.items()}
        metrics = _train_step(model, opt, params, batch, cfg, step)
        step, since_log = step + 1, since_log + 1
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
            stop = _collapse_check(model, row, state, cfg)
            if callback is not None and callback(step, model):
                stopped_early = stop = True
        every = cfg.checkpoint_every
        if ckpt is not None and (step == cfg.steps or stop or (every and step % every == 0)):
            meta = {**state, "model": _model_identity(model), "train_config": config_to_dict(cfg)}
            save_training_state(ckpt, model, opt, meta)
    bar.close()
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
        },
    )


def _collapse_check(
    model: PretrainModel, row: dict[str, Any], state: dict[str, Any], cfg: TrainConfig
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
        log.warning(
            "COLLAPSE suspected in %s/%s at step %d: target std %s (min %s), prediction std %s "
            "(min %s). Spec §9 causes: lr too high or warmup too short, tau too low.",
            *(model.method, model.modality, row["step"], t, cfg.collapse_target_std),
            *(p, cfg.collapse_pred_std),
        )
    return (low_t or low_p) and cfg.stop_on_collapse
