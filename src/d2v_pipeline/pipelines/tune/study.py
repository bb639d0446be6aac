"""The study loop: open (or continue) a study, then run trials until it holds ``n_trials``.

One trial pretrains data2vec at a reduced budget with suggested knobs (:mod:`.knobs`) and is
scored by the validation probe (:mod:`.probe`); intermediate probes feed the pruner. Counting,
locking and stale trials follow the rules in :mod:`.storage`. A study records its setup (what
defines the objective) on first use and refuses to be continued with another.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from tqdm.auto import tqdm

from d2v_pipeline.data2vec import config as cfgs
from d2v_pipeline.data2vec.models import build_pretrain_model
from d2v_pipeline.data2vec.runtime import Runtime
from d2v_pipeline.data2vec.train import derive_seed, pretrain

from .config import (
    TuneConfig,
    TuneConfigError,
    config_error,
    make_sampler,
    rung_steps,
    study_pruner,
)
from .knobs import KNOB_PARAM, params_from_knobs, suggest_knobs, trial_pretrain_params
from .probe import ProbeData, TrialFailure, probe_score
from .storage import (
    CountLock,
    count_lock,
    fail_stale_trials,
    open_storage,
    requeue_interrupted_trials,
    trial_counts,
)

log = logging.getLogger(__name__)


def open_study(
    cfg: TuneConfig, study_dir: Path | None
) -> tuple[optuna.Study, BaseStorage, CountLock]:
    """Create or load the study (maximise the probe accuracy)."""
    storage, lock = open_storage(cfg.storage, study_dir)
    with count_lock(lock, cfg.study_name):
        study = optuna.create_study(
            study_name=cfg.study_name,
            storage=storage,
            direction="maximize",
            load_if_exists=True,
            sampler=make_sampler(cfg.sampler, seed=int(cfg.sampler.get("seed", 0))),
            pruner=study_pruner(cfg),
        )
    return study, storage, lock


# Train keys that do not change what a trial learns (bookkeeping): workers may differ in
# them and still share one study. Hardware (device, threads) is <m>.runtime, not part of
# the setup either, except a lower precision (below).
NEUTRAL_TRAIN_KEYS = ("log_every", "checkpoint_every")


def study_setup(
    cfg: TuneConfig,
    dataset_info: Mapping[str, Any],
    configs: tuple[Any, Any, Any],
    trial_train: Any,
    precision: str = "fp32",
) -> dict[str, Any]:
    """The study's identity: budget, probe and search space, the data, and the configs a
    trial trains with except the searched knobs and settings that change no result.

    ``configs`` are the full run's (encoder, method, train) configs, ``trial_train`` the train
    config of a trial (reduced budget). A bf16 / fp16 ``precision`` (``<m>.runtime``) learns
    other weights, so it is part of the setup; fp32 is left out, so studies recorded before
    the runtime block existed continue.
    """
    enc, method, train = configs
    method_d = cfgs.config_to_dict(method)
    for knob in ("ema_decay", "ema_end_decay", "top_k"):
        method_d.pop(knob, None)
    method_d.get("mask", {}).pop("mask_prob", None)
    train_d = {
        k: v for k, v in cfgs.config_to_dict(trial_train).items() if k not in NEUTRAL_TRAIN_KEYS
    }
    if cfg.search_space.get("lr") is not None:
        train_d.pop("lr", None)
    setup = {
        **cfg.setup(),
        "modality": dataset_info["modality"],
        "data_hash": dataset_info.get("content_hash"),
        "full_run_steps": train.steps,
        "encoder": cfgs.config_to_dict(enc),
        "method": method_d,
        "trial_train": train_d,
    }
    if precision != "fp32":
        setup["precision"] = precision
    return setup


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def check_setup(study: optuna.Study, setup: Mapping[str, Any], where: str) -> None:
    """Record the study's setup on first use; refuse to continue it with a different one."""
    setup = json.loads(json.dumps(setup, sort_keys=True, default=str))
    old = study.user_attrs.get("setup")
    if old is None:
        study.set_user_attr("setup", setup)
        return
    before, after = _flatten(old), _flatten(setup)
    diff = [
        f"{k}: {before.get(k)!r} -> {after.get(k)!r}"
        for k in sorted(set(before) | set(after))
        if before.get(k) != after.get(k)
    ]
    if diff:
        raise TuneConfigError(
            f"study {study.study_name!r} in {where} was run with a different setup "
            f"({'; '.join(diff[:4])}{'; ...' if len(diff) > 4 else ''}); set tune.study_name to "
            "start a new study, or delete the old one"
        )


@dataclass
class TrialContext:
    """What every trial of one study needs."""

    cfg: TuneConfig
    pretrain_params: dict[str, Any]
    data: dict[str, torch.Tensor]  # unlabelled pretraining tensors
    probe: ProbeData
    build_configs: Callable[[Mapping[str, Any]], tuple[Any, Any, Any]]  # params -> configs
    defaults: dict[str, Any]
    depth: int
    full_steps: int
    anneal_end_step: int
    runtime: Runtime | None = None  # device, precision, threads (None: CPU, fp32, as is)


def check_context(ctx: TrialContext) -> None:
    """Fail before any trial on settings a trial would trip over (errors name the key)."""
    cfg = ctx.cfg
    top_k = cfg.search_space.get("top_k")
    if top_k is not None and top_k.high is not None and top_k.high > ctx.depth:
        raise config_error(
            "tune.search_space.top_k.high", f"{top_k.high} > encoder depth {ctx.depth}"
        )
    if top_k is not None and top_k.low > ctx.depth:
        raise config_error(
            "tune.search_space.top_k.low", f"{top_k.low} > encoder depth {ctx.depth}"
        )
    for i, entry in enumerate(cfg.enqueue):
        for knob in entry:
            if cfg.search_space.get(KNOB_PARAM[knob]) is None:
                raise config_error(
                    f"tune.enqueue[{i}].{knob}",
                    f"not searched (tune.search_space.{KNOB_PARAM[knob]} is null)",
                )
        params_from_knobs(entry, cfg.search_space, ctx.defaults)
    params = trial_pretrain_params(
        ctx.pretrain_params, ctx.defaults, cfg, ctx.full_steps, ctx.anneal_end_step
    )
    _, _, train_cfg = ctx.build_configs(params)  # raises ConfigError naming a bad train key
    if cfg.report_every % train_cfg.log_every:
        raise config_error(
            "tune.report_every",
            f"{cfg.report_every} is not a multiple of the trials' train.log_every "
            f"{train_cfg.log_every} (set tune.train.log_every)",
        )
    rungs = rung_steps(cfg)  # raises on a min_resource that is not a probe step
    if rungs:
        log.info(
            "%s compares trials at steps %s (per bracket; the final probe is the value)",
            cfg.pruner["type"],
            "; ".join(", ".join(map(str, b)) or "none" for b in rungs),
        )
    if cfg.report_every >= cfg.steps:
        log.warning(
            "tune.report_every %d >= tune.steps %d: no intermediate probe, so no pruning",
            cfg.report_every,
            cfg.steps,
        )


def _mark_enqueued(study: optuna.Study, ctx: TrialContext) -> None:
    """Enqueue the default config (as the study's first trial) and the user's list, once."""
    wanted: list[tuple[str, dict[str, Any]]] = []
    if ctx.cfg.enqueue_default:
        wanted.append(("default", dict(ctx.defaults)))
    wanted += [(f"enqueue_{i}", dict(e)) for i, e in enumerate(ctx.cfg.enqueue)]
    trials = study.get_trials(deepcopy=False)
    for tag, knobs in wanted:
        done = any(
            t.user_attrs.get("enqueued") == tag
            and (t.state == TrialState.WAITING or trial_counts(t))
            for t in trials
        )
        if not done:
            params = params_from_knobs(knobs, ctx.cfg.search_space, ctx.defaults)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an out-of-range enqueued value is allowed
                study.enqueue_trial(params, user_attrs={"enqueued": tag})


def run_study(
    study: optuna.Study, storage: BaseStorage, lock: CountLock, ctx: TrialContext
) -> dict[str, Any]:
    """Run trials until the study holds ``n_trials`` counted trials (or the timeout passes).

    Returns a record of what this worker did.
    """
    cfg = ctx.cfg
    check_context(ctx)
    start = time.perf_counter()
    ran: list[int] = []
    with count_lock(lock, study.study_name):
        n_before = sum(trial_counts(t) for t in study.get_trials(deepcopy=False))
    bar = tqdm(
        total=cfg.n_trials,
        initial=min(n_before, cfg.n_trials),
        disable=not cfg.progress,
        desc=f"tune {cfg.modality}",
        unit="trial",
        dynamic_ncols=True,
    )
    stop_reason = "n_trials reached"
    while True:
        if cfg.timeout_s is not None and time.perf_counter() - start > cfg.timeout_s:
            stop_reason = f"timeout {cfg.timeout_s:g} s"
            break
        with count_lock(lock, study.study_name):
            # lost trials (killed worker, Ctrl-C) are enqueued again with their parameters
            fail_stale_trials(study, storage, cfg.stale_after_s)
            requeue_interrupted_trials(study)
            trials = study.get_trials(deepcopy=False)
            counted = sum(trial_counts(t) for t in trials)
            if counted >= cfg.n_trials:
                break
            _mark_enqueued(study, ctx)
            # a fresh sampler per trial, seeded by (seed, trial count): reproducible for one
            # worker, and two workers never draw the same startup configs
            seed = derive_seed(int(cfg.sampler.get("seed", 0)), "tune", len(trials)) % 2**32
            study.sampler = make_sampler(cfg.sampler, seed=seed)
            trial = study.ask()
            trial.set_user_attr("worker_host", socket.gethostname())
            trial.set_user_attr("worker_pid", os.getpid())
            trial.set_user_attr("heartbeat", time.time())
        run_trial(study, trial, ctx)
        ran.append(trial.number)
        bar.update(1)
    bar.close()
    with count_lock(lock, study.study_name):
        n_after = sum(trial_counts(t) for t in study.get_trials(deepcopy=False))
    return {
        "trials_run": ran,
        "counted_before": n_before,
        "counted_after": n_after,
        "n_trials": cfg.n_trials,
        "seconds": time.perf_counter() - start,
        "stop_reason": stop_reason,
    }


def run_trial(study: optuna.Study, trial: optuna.Trial, ctx: TrialContext) -> TrialState:
    """One trial: pretrain with suggested knobs, report intermediate probes, tell the result.

    A NaN loss or non-finite features -> FAIL (counted); collapse or the pruner -> PRUNED;
    both with the reason in the trial's user attrs. Anything else (a bug, Ctrl-C) marks the
    trial FAIL as not counted, so a re-run replaces it, and is raised.
    """
    cfg, t0 = ctx.cfg, time.perf_counter()
    state: dict[str, Any] = {"steps": 0, "pruned": None, "lost": False, "beat": time.time()}
    try:
        knobs = suggest_knobs(trial, cfg.search_space, ctx.defaults, ctx.depth)
        params = trial_pretrain_params(
            ctx.pretrain_params, knobs, cfg, ctx.full_steps, ctx.anneal_end_step
        )
        enc_cfg, method_cfg, train_cfg = ctx.build_configs(params)
        for key, value in knobs.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("trial_ema_decay", method_cfg.ema_decay)
        trial.set_user_attr("trial_ema_end_decay", method_cfg.ema_end_decay)
        model = build_pretrain_model("data2vec", enc_cfg, method_cfg, seed=train_cfg.seed)

        def callback(step: int, model_: Any) -> bool:
            state["steps"] = step
            if time.time() - state["beat"] > cfg.heartbeat_s:
                try:
                    trial.set_user_attr("heartbeat", time.time())
                    state["beat"] = time.time()
                except (RuntimeError, ValueError):  # another worker failed us as stale
                    state["lost"] = True
                    return True
            if step % cfg.report_every or step >= train_cfg.steps:
                return False
            score = probe_score(model_.encoder, ctx.probe, cfg.probe, ctx.runtime)["accuracy"]
            trial.report(score, step)
            log.info("trial %d step %d: probe %.4f", trial.number, step, score)
            if trial.should_prune():
                state["pruned"] = f"pruner ({cfg.pruner['type']}): probe {score:.4f} at step {step}"
                return True
            return False

        result = pretrain(
            model, ctx.data, train_cfg, progress=False, callback=callback, runtime=ctx.runtime
        )
        state["steps"] = result.steps
        trial.set_user_attr("steps", result.steps)
        if state["lost"]:
            log.warning("trial %d was marked stale by another worker; dropped", trial.number)
            return TrialState.FAIL
        if result.collapsed:
            state["pruned"] = f"collapse at step {result.collapse_step} (spec §9 std thresholds)"
        if state["pruned"] is not None:
            return _tell(study, trial, TrialState.PRUNED, None, "prune_reason", state, t0)
        final = probe_score(model.encoder, ctx.probe, cfg.probe, ctx.runtime)
        trial.set_user_attr("probe_C", final["C"])
        trial.set_user_attr("select_accuracy", final["select_accuracy"])
        return _tell(study, trial, TrialState.COMPLETE, final["accuracy"], None, state, t0)
    except FloatingPointError as err:  # pretrain's NaN/inf loss guard
        trial.set_user_attr("fail_kind", "nan_loss")
        state["reason"] = str(err)
        return _tell(study, trial, TrialState.FAIL, None, "fail_reason", state, t0)
    except TrialFailure as err:
        trial.set_user_attr("fail_kind", err.kind)
        state["reason"] = err.reason
        return _tell(study, trial, TrialState.FAIL, None, "fail_reason", state, t0)
    except BaseException as err:
        kind = "interrupted" if isinstance(err, KeyboardInterrupt) else "error"
        with contextlib.suppress(Exception):
            trial.set_user_attr("fail_kind", kind)
            trial.set_user_attr("fail_reason", f"{kind}: {type(err).__name__}: {err}")
            study.tell(trial, state=TrialState.FAIL)
        raise


def _tell(
    study: optuna.Study,
    trial: optuna.Trial,
    state: TrialState,
    value: float | None,
    reason_key: str | None,
    info: dict[str, Any],
    t0: float,
) -> TrialState:
    reason = info.get("reason") if state == TrialState.FAIL else info.get("pruned")
    try:
        if reason_key is not None:
            trial.set_user_attr(reason_key, reason)
        trial.set_user_attr("steps", info["steps"])
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        study.tell(trial, value, state=state)
    except (RuntimeError, ValueError):
        # another worker marked this (slow) trial stale and failed it: keep its verdict
        current = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        if not current.state.is_finished():
            raise
        log.warning("trial %d was finished by another worker as %s", trial.number, current.state)
        return current.state
    log.info(
        "trial %d %s%s%s after %d steps (%.1f s)",
        trial.number,
        state.name,
        f" value {value:.4f}" if value is not None else "",
        f" ({reason})" if reason else "",
        info["steps"],
        time.perf_counter() - t0,
    )
    return state
