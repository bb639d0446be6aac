"""Optuna tuning of data2vec's knobs: EMA decays, mask ratio, top-K (and optionally the lr).

A plain module (no Kedro): the tune pipeline's nodes call it. One trial pretrains data2vec at a
reduced budget with suggested values and is scored by a linear probe on the validation split
only (C chosen on one half, accuracy on the other); intermediate probes feed a pruner.

Knobs are expressed in the units of the full pretraining run (``<m>.pretrain``), so the best
values can be pasted into parameters_pretrain.yml as they are. A trial's shorter run converts
them with the short-run rule of spec §2: ``1 - tau`` scales by ``T_full / T_trial`` (clamped
at ``ema_floor``) and the anneal end keeps its share of the run.

Study bookkeeping, robust to interruption and to several workers on one storage:

- a trial *counts* towards ``n_trials`` when complete, pruned, failed because of its config
  (NaN loss, non-finite features) or running in a live worker;
- a worker counts and creates its next trial under a lock (local journal / SQLite files), so
  two local workers never overshoot; over an RDB shared by machines the count is not locked
  and the total may exceed ``n_trials`` by at most the number of workers minus one;
- a trial left RUNNING by a killed worker (dead pid on this host, or no heartbeat for
  ``stale_after_s``) is marked failed ("stale") and re-run; an interrupted trial likewise.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import torch
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from d2v_pipeline.data2vec.models import build_pretrain_model
from d2v_pipeline.data2vec.train import derive_seed, pretrain
from d2v_pipeline.evaluation import extract_features, linear_probe

log = logging.getLogger(__name__)

KNOBS = ("ema_decay", "ema_end_decay", "mask_prob", "top_k", "lr")
# Optuna parameter names (what the study, the dashboard and the figures show).
SPACE_KEYS = ("one_minus_ema_decay", "ema_end_ratio", "mask_prob", "top_k", "lr")
# FAIL kinds that are a verdict on the trial's config: they count towards n_trials.
COUNTED_FAILURES = ("nan_loss", "non_finite_features")
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "threshold", "none")
SAMPLERS = ("tpe", "random")
JOURNAL_FILE = "study.journal"


class TuneConfigError(ValueError):
    """A tune parameter is invalid; the message names the key."""


class TrialFailure(Exception):
    """A trial failed because of its configuration (NaN loss, non-finite features)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


# ------------------------------------------------------------------ configuration
@dataclass(frozen=True)
class Range:
    """A numeric search range; ``high=None`` (top_k only) means the encoder depth."""

    low: float
    high: float | None
    log: bool = False


@dataclass(frozen=True)
class ProbeSettings:
    """How a trial's encoder is scored (validation split only, never test)."""

    label_fraction: float = 0.1  # labelled train subset from ingest's label_subsets
    subset_seed: int = 0  # which per-seed subset when label_subsets holds one per seed
    split_seed: int = 0  # the fixed split of val into a C-selection half and a scoring half
    layers: str = "top_k_mean"  # final | top_k_mean | concat (evaluation.extract_features)
    top_k: int | None = None  # blocks for top_k_mean/concat; None = every block
    pool: str = "mean"
    Cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    max_iter: int = 300
    batch_size: int = 256


@dataclass(frozen=True)
class TuneConfig:
    """Everything ``<m>.tune`` holds (conf/base/parameters_tune.yml documents each key)."""

    modality: str
    study_name: str
    storage: str | None = None  # None = journal file in the study folder; or an RDB URL
    n_trials: int = 20
    timeout_s: float | None = None
    steps: int = 500
    report_every: int = 100
    train: dict[str, Any] = field(default_factory=dict)  # other <m>.pretrain.train overrides
    ema_budget_scaling: bool = True
    ema_floor: float = 0.9
    enqueue_default: bool = True
    enqueue: tuple[dict[str, Any], ...] = ()
    sampler: dict[str, Any] = field(default_factory=lambda: {"type": "tpe", "seed": 0})
    pruner: dict[str, Any] = field(default_factory=lambda: {"type": "median"})
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    search_space: dict[str, Range | None] = field(default_factory=dict)
    stale_after_s: float = 900.0
    heartbeat_s: float = 30.0
    progress: bool = True

    def setup(self) -> dict[str, Any]:
        """What of this config defines the objective (the trials' train config is added by the
        caller): a study may only be continued with the same setup."""
        return {
            "steps": self.steps,
            "report_every": self.report_every,
            "ema_budget_scaling": self.ema_budget_scaling,
            "ema_floor": self.ema_floor,
            "probe": asdict(self.probe),
            "search_space": {
                k: None if r is None else asdict(r) for k, r in sorted(self.search_space.items())
            },
        }


_TOP_KEYS = {
    "study_name", "storage", "n_trials", "timeout_s", "steps", "report_every", "train",
    "ema_budget_scaling", "ema_floor", "enqueue_default", "enqueue", "sampler", "pruner",
    "probe", "search_space", "stale_after_s", "heartbeat_s", "progress",
}  # fmt: skip


def _fail(where: str, message: str) -> TuneConfigError:
    return TuneConfigError(f"parameters_tune.yml: {where}: {message}")


def _number(value: Any, where: str, *, integer: bool = False, positive: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        raise _fail(where, f"expected {'an integer' if integer else 'a number'}, got {value!r}")
    if positive and value <= 0:
        raise _fail(where, f"must be > 0, got {value!r}")
    return value if integer else float(value)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(where, f"expected a mapping, got {type(value).__name__}")
    return dict(value)


def _range(value: Any, where: str, *, integer: bool = False) -> Range | None:
    if value is None:
        return None
    spec = _mapping(value, where)
    unknown = sorted(set(spec) - {"low", "high", "log"})
    if unknown or "low" not in spec:
        raise _fail(where, f"expected {{low, high[, log]}}, got keys {sorted(spec)}")
    low = _number(spec["low"], f"{where}.low", integer=integer)
    high = spec.get("high")
    if high is not None or not integer:
        high = _number(high, f"{where}.high", integer=integer)
        if high < low:
            raise _fail(where, f"high {high} < low {low}")
    log_scale = spec.get("log", False)
    if not isinstance(log_scale, bool):
        raise _fail(f"{where}.log", f"expected true/false, got {log_scale!r}")
    if log_scale and low <= 0:
        raise _fail(where, f"a log range needs low > 0, got {low}")
    return Range(low=low, high=high, log=log_scale)


_SPACE_LIMITS = {  # (smallest low, largest high) allowed for each knob
    "one_minus_ema_decay": (0.0, 1.0),
    "ema_end_ratio": (0.0, 1.0),  # <= 1 keeps ema_end_decay >= ema_decay
    "mask_prob": (0.0, 1.0),
    "top_k": (1, None),
    "lr": (0.0, None),
}


def tune_config_from_dict(modality: str, params: Mapping[str, Any] | None) -> TuneConfig:
    """Validate ``<m>.tune`` and build a :class:`TuneConfig`; errors name the key."""
    p = _mapping(params, f"{modality}.tune")
    unknown = sorted(set(p) - _TOP_KEYS)
    if unknown:
        raise _fail(
            f"{modality}.tune", f"unknown key {unknown[0]!r} (allowed: {sorted(_TOP_KEYS)})"
        )
    w = f"{modality}.tune"
    kw: dict[str, Any] = {"modality": modality}
    kw["study_name"] = p.get("study_name") or f"d2v_{modality}"
    if not isinstance(kw["study_name"], str):
        raise _fail(f"{w}.study_name", f"expected a string, got {kw['study_name']!r}")
    storage = p.get("storage")
    if storage is not None and (not isinstance(storage, str) or not storage.strip()):
        raise _fail(f"{w}.storage", f"expected null or a URL/path string, got {storage!r}")
    kw["storage"] = storage
    for key in ("n_trials", "steps", "report_every"):
        if key in p:
            kw[key] = _number(p[key], f"{w}.{key}", integer=True, positive=True)
    for key in ("stale_after_s", "heartbeat_s"):
        if key in p:
            kw[key] = _number(p[key], f"{w}.{key}", positive=True)
    if p.get("timeout_s") is not None:
        kw["timeout_s"] = _number(p["timeout_s"], f"{w}.timeout_s", positive=True)
    if "ema_floor" in p:
        kw["ema_floor"] = _number(p["ema_floor"], f"{w}.ema_floor")
        if not 0.0 <= kw["ema_floor"] < 1.0:
            raise _fail(f"{w}.ema_floor", f"must be in [0, 1), got {kw['ema_floor']}")
    for key in ("ema_budget_scaling", "enqueue_default", "progress"):
        if key in p:
            if not isinstance(p[key], bool):
                raise _fail(f"{w}.{key}", f"expected true/false, got {p[key]!r}")
            kw[key] = p[key]
    train = _mapping(p.get("train"), f"{w}.train")
    if "steps" in train:
        raise _fail(f"{w}.train.steps", "set the trial budget with tune.steps")
    kw["train"] = train
    enqueue = p.get("enqueue") or []
    if not isinstance(enqueue, list | tuple):
        raise _fail(f"{w}.enqueue", f"expected a list of mappings, got {enqueue!r}")
    for i, entry in enumerate(enqueue):
        bad = sorted(set(_mapping(entry, f"{w}.enqueue[{i}]")) - set(KNOBS))
        if bad:
            raise _fail(f"{w}.enqueue[{i}]", f"unknown knob {bad[0]!r} (allowed: {list(KNOBS)})")
    kw["enqueue"] = tuple(dict(e) for e in enqueue)
    kw["sampler"] = _component(p.get("sampler"), f"{w}.sampler", SAMPLERS, "tpe")
    kw["pruner"] = _component(p.get("pruner"), f"{w}.pruner", PRUNERS, "median")
    kw["probe"] = _probe_settings(p.get("probe"), f"{w}.probe")
    kw["search_space"] = _search_space(p.get("search_space"), f"{w}.search_space")
    if "lr" in train and kw["search_space"].get("lr") is not None:
        raise _fail(f"{w}.train.lr", "lr is searched (search_space.lr); remove the override")
    cfg = TuneConfig(**kw)
    # build once so a bad sampler/pruner argument fails before any trial runs
    make_sampler(cfg.sampler, seed=0)
    make_pruner(cfg.pruner)
    return cfg


def _component(value: Any, where: str, allowed: Sequence[str], default: str) -> dict[str, Any]:
    spec = _mapping(value, where)
    spec.setdefault("type", default)
    if spec["type"] not in allowed:
        raise _fail(f"{where}.type", f"{spec['type']!r} is not one of {list(allowed)}")
    return spec


def _probe_settings(value: Any, where: str) -> ProbeSettings:
    spec = _mapping(value, where)
    allowed = set(ProbeSettings.__dataclass_fields__)
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise _fail(where, f"unknown key {unknown[0]!r} (allowed: {sorted(allowed)})")
    if "label_fraction" in spec:
        spec["label_fraction"] = _number(spec["label_fraction"], f"{where}.label_fraction")
        if not 0.0 < spec["label_fraction"] <= 1.0:
            raise _fail(f"{where}.label_fraction", "must be in (0, 1]")
    for key in ("subset_seed", "split_seed"):
        if key in spec:
            spec[key] = _number(spec[key], f"{where}.{key}", integer=True)
    for key in ("max_iter", "batch_size"):
        if key in spec:
            spec[key] = _number(spec[key], f"{where}.{key}", integer=True, positive=True)
    if spec.get("top_k") is not None:
        spec["top_k"] = _number(spec["top_k"], f"{where}.top_k", integer=True, positive=True)
    if spec.get("layers", "top_k_mean") not in ("final", "top_k_mean", "concat"):
        raise _fail(f"{where}.layers", f"{spec['layers']!r} is not final/top_k_mean/concat")
    if spec.get("pool", "mean") not in ("mean", "cls"):
        raise _fail(f"{where}.pool", f"{spec['pool']!r} is not mean/cls")
    if "Cs" in spec:
        cs = spec["Cs"]
        if not isinstance(cs, list | tuple) or not cs:
            raise _fail(f"{where}.Cs", f"expected a non-empty list, got {cs!r}")
        spec["Cs"] = tuple(_number(c, f"{where}.Cs", positive=True) for c in cs)
    return ProbeSettings(**spec)


def _search_space(value: Any, where: str) -> dict[str, Range | None]:
    spec = _mapping(value, where)
    unknown = sorted(set(spec) - set(SPACE_KEYS))
    if unknown:
        raise _fail(where, f"unknown key {unknown[0]!r} (allowed: {list(SPACE_KEYS)})")
    space: dict[str, Range | None] = {}
    for key in SPACE_KEYS:
        r = _range(spec.get(key), f"{where}.{key}", integer=key == "top_k")
        if r is not None:
            lo, hi = _SPACE_LIMITS[key]
            if r.low < lo or (hi is not None and r.high is not None and r.high > hi):
                raise _fail(f"{where}.{key}", f"range [{r.low}, {r.high}] outside [{lo}, {hi}]")
            if key in ("one_minus_ema_decay", "ema_end_ratio", "lr") and r.low <= 0:
                raise _fail(f"{where}.{key}", f"low must be > 0, got {r.low}")
        space[key] = r
    return space


# ------------------------------------------------------------------ samplers and pruners
def make_sampler(spec: Mapping[str, Any], seed: int) -> optuna.samplers.BaseSampler:
    """TPE or random sampler from ``{type, seed, ...}``; ``seed`` overrides spec's seed."""
    kwargs = {k: v for k, v in spec.items() if k not in ("type", "seed")}
    cls = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}[spec["type"]]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls(seed=seed, **kwargs)
    except TypeError as err:
        raise _fail("tune.sampler", f"bad argument for {spec['type']}: {err}") from err


def make_pruner(spec: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    """A pruner from ``{type: median|percentile|successive_halving|hyperband|threshold|none}``
    plus that Optuna class's keyword arguments."""
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    cls = {
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "threshold": optuna.pruners.ThresholdPruner,
        "none": optuna.pruners.NopPruner,
    }[spec["type"]]
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise _fail("tune.pruner", f"bad argument for {spec['type']}: {err}") from err


# ------------------------------------------------------------------ knobs <-> Optuna params
def _clean(x: float) -> float:
    """Drop float noise from 1 - (1 - tau) round trips (0.9900000000000001 -> 0.99)."""
    return float(f"{x:.12g}")


def default_knobs(method_cfg: Any, train_cfg: Any) -> dict[str, Any]:
    """The knob values of the full pretraining config (the 'default' trial)."""
    return {
        "ema_decay": float(method_cfg.ema_decay),
        "ema_end_decay": float(method_cfg.ema_end_decay),
        "mask_prob": float(method_cfg.mask.mask_prob),
        "top_k": int(method_cfg.top_k),
        "lr": float(train_cfg.lr),
    }


def knobs_from_params(params: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Full-run knob values from Optuna params; knobs not searched keep their defaults.

    ``ema_decay = 1 - one_minus_ema_decay`` and ``1 - ema_end_decay = (1 - ema_decay) *
    ema_end_ratio`` with the ratio <= 1, so the end decay is never below the start decay.
    """
    knobs = dict(defaults)
    start_gap = 1.0 - defaults["ema_decay"]
    default_ratio = (1.0 - defaults["ema_end_decay"]) / start_gap if start_gap > 0 else 1.0
    if "one_minus_ema_decay" in params:
        start_gap = float(params["one_minus_ema_decay"])
        knobs["ema_decay"] = _clean(1.0 - start_gap)
    ratio = float(params.get("ema_end_ratio", default_ratio))
    knobs["ema_end_decay"] = _clean(1.0 - start_gap * ratio)
    for key in ("mask_prob", "lr"):
        if key in params:
            knobs[key] = _clean(float(params[key]))
    if "top_k" in params:
        knobs["top_k"] = int(params["top_k"])
    return knobs


def params_from_knobs(
    knobs: Mapping[str, Any], space: Mapping[str, Range | None], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """Optuna params that reproduce ``knobs`` (missing knobs = defaults); only searched keys."""
    k = {**defaults, **knobs}
    start_gap = 1.0 - float(k["ema_decay"])
    if float(k["ema_end_decay"]) < float(k["ema_decay"]):
        raise TuneConfigError(
            f"ema_end_decay {k['ema_end_decay']} < ema_decay {k['ema_decay']} in an enqueued "
            "trial; the search space keeps end >= start"
        )
    values = {
        "one_minus_ema_decay": _clean(start_gap),
        "ema_end_ratio": _clean((1.0 - float(k["ema_end_decay"])) / start_gap)
        if start_gap > 0
        else 1.0,
        "mask_prob": float(k["mask_prob"]),
        "top_k": int(k["top_k"]),
        "lr": float(k["lr"]),
    }
    return {key: values[key] for key, r in space.items() if r is not None}


def suggest_knobs(
    trial: optuna.Trial,
    space: Mapping[str, Range | None],
    defaults: Mapping[str, Any],
    depth: int,
) -> dict[str, Any]:
    """Ask the trial for every searched knob (top_k's ``high: null`` = encoder depth)."""
    params: dict[str, Any] = {}
    for key in SPACE_KEYS:
        r = space.get(key)
        if r is None:
            continue
        if key == "top_k":
            high = depth if r.high is None else int(r.high)
            if high > depth:
                raise TuneConfigError(
                    f"parameters_tune.yml: tune.search_space.top_k.high {high} exceeds the "
                    f"encoder depth {depth}"
                )
            params[key] = trial.suggest_int(key, int(r.low), high, log=r.log)
        else:
            params[key] = trial.suggest_float(key, float(r.low), float(r.high), log=r.log)
    return knobs_from_params(params, defaults)


def trial_tau(tau: float, full_steps: int, trial_steps: int, floor: float) -> float:
    """Spec §2 short-run rule: keep the teacher memory 1/(1-tau) proportional to the run length.

    ``tau' = max(floor, 1 - (1 - tau) * T_full / T_trial)``; tau = 1 stays 1.
    """
    if tau >= 1.0:
        return tau
    return _clean(max(floor, 1.0 - (1.0 - tau) * full_steps / trial_steps))


def apply_knobs(pretrain_params: Mapping[str, Any], knobs: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``<m>.pretrain`` params with the knob values set (full-run units)."""
    params = copy.deepcopy(dict(pretrain_params))
    d2v = params.setdefault("data2vec", {}) or {}
    params["data2vec"] = d2v
    d2v["ema_decay"] = float(knobs["ema_decay"])
    d2v["ema_end_decay"] = float(knobs["ema_end_decay"])
    d2v["top_k"] = int(knobs["top_k"])
    d2v.setdefault("mask", {})
    d2v["mask"]["mask_prob"] = float(knobs["mask_prob"])
    params.setdefault("train", {})
    params["train"]["lr"] = float(knobs["lr"])
    return params


def trial_pretrain_params(
    pretrain_params: Mapping[str, Any],
    knobs: Mapping[str, Any],
    cfg: TuneConfig,
    full_steps: int,
    anneal_end_step: int,
) -> dict[str, Any]:
    """``<m>.pretrain`` params for one trial: the knobs, the reduced budget and, with
    ``ema_budget_scaling``, the EMA schedule converted to the shorter run (spec §2)."""
    params = apply_knobs(pretrain_params, knobs)
    params["train"].update(copy.deepcopy(cfg.train))
    params["train"]["steps"] = cfg.steps
    d2v = params["data2vec"]
    if cfg.ema_budget_scaling:
        for key in ("ema_decay", "ema_end_decay"):
            d2v[key] = trial_tau(d2v[key], full_steps, cfg.steps, cfg.ema_floor)
        # spec §2: keep tau_n / T
        d2v["ema_anneal_end_step"] = round(anneal_end_step * cfg.steps / full_steps)
    return params


def best_params_document(modality: str, knobs: Mapping[str, Any] | None, tuned_lr: bool) -> dict:
    """The best knobs shaped like parameters_pretrain.yml (``{m: {pretrain: ...}}``)."""
    if knobs is None:
        return {}
    doc: dict[str, Any] = {
        "data2vec": {
            "ema_decay": float(knobs["ema_decay"]),
            "ema_end_decay": float(knobs["ema_end_decay"]),
            "top_k": int(knobs["top_k"]),
            "mask": {"mask_prob": float(knobs["mask_prob"])},
        }
    }
    if tuned_lr:
        doc["train"] = {"lr": float(knobs["lr"])}
    return {modality: {"pretrain": doc}}


# ------------------------------------------------------------------ probe on val halves
Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]  # x, y, attention_mask


@dataclass
class ProbeData:
    """Labelled train subset (fit), val half A (chooses C), val half B (the score)."""

    train: Split
    select: Split
    score: Split


def split_val_halves(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified halves of the val rows: (C-selection rows, scoring rows).

    Rows are shuffled within each class (``seed``), laid out class after class and dealt
    alternately, so each class splits evenly (+-1) and even a val split with one row per
    class yields two non-empty halves.
    """
    rng = np.random.default_rng([seed, 7919])
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)])
    return np.sort(order[0::2]), np.sort(order[1::2])


def make_probe_data(
    model_input: Mapping[str, torch.Tensor], train_idx: np.ndarray, split_seed: int
) -> ProbeData:
    """Gather the probe's rows from ingest's tensors (the test split is never read)."""

    def take(split: str, idx: np.ndarray) -> Split:
        t = torch.as_tensor(idx, dtype=torch.long)
        am = model_input.get(f"{split}.attention_mask")
        return (
            model_input[f"{split}.x"][t],
            model_input[f"{split}.y"][t],
            (None if am is None else am[t]),
        )

    n_train = len(model_input["train.y"])
    if len(train_idx) == 0 or train_idx.min() < 0 or train_idx.max() >= n_train:
        raise ValueError(f"label subset indices must be in [0, {n_train}); got {len(train_idx)}")
    val_y = model_input["val.y"].numpy()
    half_a, half_b = split_val_halves(val_y, split_seed)
    if len(half_a) == 0 or len(half_b) == 0:
        raise ValueError(f"val split has {len(val_y)} rows: too few to halve for the probe")
    data = ProbeData(take("train", train_idx), take("val", half_a), take("val", half_b))
    if len(torch.unique(data.train[1])) < 2:
        raise ValueError("the labelled train subset holds a single class; raise label_fraction")
    return data


def probe_score(encoder: torch.nn.Module, data: ProbeData, s: ProbeSettings) -> dict[str, Any]:
    """Val-half accuracy of a linear probe on the frozen encoder (C chosen on the other half).

    Raises TrialFailure("non_finite_features") when the encoder outputs NaN/inf.
    """
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            feats = [
                extract_features(
                    encoder,
                    x,
                    am,
                    layers=s.layers,
                    top_k=s.top_k,
                    pool=s.pool,
                    batch_size=s.batch_size,
                )
                for x, _, am in (data.train, data.select, data.score)
            ]
    finally:
        encoder.train(was_training)
    for name, f in zip(("train", "val_select", "val_score"), feats, strict=True):
        if not np.all(np.isfinite(f)):
            raise TrialFailure("non_finite_features", f"non-finite encoder features ({name})")
    # linear_probe picks C on its "val" argument and scores its "test" argument: here the
    # two val halves, so the score never sees the data C was chosen on, and test stays unread
    res = linear_probe(
        feats[0], data.train[1].numpy(), feats[1], data.select[1].numpy(), feats[2],
        data.score[1].numpy(), Cs=s.Cs, max_iter=s.max_iter, seed=0,
    )  # fmt: skip
    return {"accuracy": res.test_accuracy, "select_accuracy": res.val_accuracy, "C": res.chosen_C}


# ------------------------------------------------------------------ storage and locking
def describe_storage(storage: str | None, study_dir: Path | None) -> str:
    """A printable storage location with any password removed."""
    if storage is None:
        return str(Path(study_dir or ".") / JOURNAL_FILE)
    if "://" in storage:
        from sqlalchemy.engine import make_url

        try:
            return make_url(storage).render_as_string(hide_password=True)
        except Exception:  # an unparsable URL: never print it, it may hold a password
            return storage.split("://", 1)[0] + "://***"
    return storage


def open_storage(storage: str | None, study_dir: Path | None) -> tuple[BaseStorage, Path | None]:
    """The Optuna storage and, for local files, the path our trial-count lock sits next to.

    ``None`` = a journal file ``study.journal`` in ``study_dir``; a string with ``://`` = an RDB
    URL (``sqlite:///...``, ``postgresql://...``); any other string = a journal file path.
    """
    if storage is not None and "://" in storage:
        kwargs: dict[str, Any] = {}
        lock_base = None
        if storage.startswith("sqlite:///"):
            # several local workers on one SQLite file wait for each other instead of failing
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
            lock_base = Path(storage.removeprefix("sqlite:///"))
            lock_base.parent.mkdir(parents=True, exist_ok=True)
        return RDBStorage(storage, **kwargs), lock_base
    path = Path(storage) if storage is not None else Path(study_dir or ".") / JOURNAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path))), path


@contextlib.contextmanager
def count_lock(lock_base: Path | None) -> Iterator[None]:
    """Serialise count-then-create between local workers (no-op for a remote RDB)."""
    if lock_base is None:
        yield
        return
    # our own lock file: the journal backend already uses "<journal>.lock"
    lock = JournalFileOpenLock(str(lock_base) + ".tune", grace_period=60)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def trial_counts(trial: FrozenTrial) -> bool:
    """Whether a trial counts towards n_trials (see module docstring)."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get("fail_kind") in COUNTED_FAILURES


def fail_stale_trials(study: optuna.Study, storage: BaseStorage, stale_after_s: float) -> list[int]:
    """Mark RUNNING trials whose worker is gone as FAIL ("stale"); returns their numbers."""
    host, now, failed = socket.gethostname(), time.time(), []
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = t.user_attrs.get("heartbeat")
        if beat is None and t.datetime_start is not None:
            beat = t.datetime_start.timestamp()
        pid = t.user_attrs.get("worker_pid")
        dead = t.user_attrs.get("worker_host") == host and pid != os.getpid() and pid is not None
        dead = dead and not _pid_alive(int(pid))
        if dead or (beat is not None and now - beat > stale_after_s):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            reason = "worker process gone" if dead else f"no heartbeat for {now - beat:.0f} s"
            storage.set_trial_user_attr(trial_id, "fail_kind", "stale")
            storage.set_trial_user_attr(trial_id, "fail_reason", f"stale: {reason}")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            failed.append(t.number)
            log.warning("trial %d marked failed (stale: %s); it will be re-run", t.number, reason)
    return failed


def open_study(cfg: TuneConfig, study_dir: Path | None) -> tuple[optuna.Study, BaseStorage, Any]:
    """Create or load the study (maximise the probe accuracy)."""
    storage, lock_base = open_storage(cfg.storage, study_dir)
    with count_lock(lock_base):
        study = optuna.create_study(
            study_name=cfg.study_name,
            storage=storage,
            direction="maximize",
            load_if_exists=True,
            sampler=make_sampler(cfg.sampler, seed=int(cfg.sampler.get("seed", 0))),
            pruner=make_pruner(cfg.pruner),
        )
    return study, storage, lock_base


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


# ------------------------------------------------------------------ the study loop
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


_KNOB_PARAM = {
    "ema_decay": "one_minus_ema_decay",
    "ema_end_decay": "ema_end_ratio",
    "mask_prob": "mask_prob",
    "top_k": "top_k",
    "lr": "lr",
}


def check_context(ctx: TrialContext) -> None:
    """Fail before any trial on settings a trial would trip over (errors name the key)."""
    cfg = ctx.cfg
    top_k = cfg.search_space.get("top_k")
    if top_k is not None and top_k.high is not None and top_k.high > ctx.depth:
        raise _fail("tune.search_space.top_k.high", f"{top_k.high} > encoder depth {ctx.depth}")
    if top_k is not None and top_k.low > ctx.depth:
        raise _fail("tune.search_space.top_k.low", f"{top_k.low} > encoder depth {ctx.depth}")
    for i, entry in enumerate(cfg.enqueue):
        for knob in entry:
            if cfg.search_space.get(_KNOB_PARAM[knob]) is None:
                raise _fail(
                    f"tune.enqueue[{i}].{knob}",
                    f"not searched (tune.search_space.{_KNOB_PARAM[knob]} is null)",
                )
        params_from_knobs(entry, cfg.search_space, ctx.defaults)
    params = trial_pretrain_params(
        ctx.pretrain_params, ctx.defaults, cfg, ctx.full_steps, ctx.anneal_end_step
    )
    _, _, train_cfg = ctx.build_configs(params)  # raises ConfigError naming a bad train key
    if cfg.report_every % train_cfg.log_every:
        raise _fail(
            "tune.report_every",
            f"{cfg.report_every} is not a multiple of the trials' train.log_every "
            f"{train_cfg.log_every} (set tune.train.log_every)",
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
    study: optuna.Study, storage: BaseStorage, lock_base: Path | None, ctx: TrialContext
) -> dict[str, Any]:
    """Run trials until the study holds ``n_trials`` counted trials (or the timeout passes).

    Returns a record of what this worker did.
    """
    cfg = ctx.cfg
    check_context(ctx)
    start = time.perf_counter()
    ran: list[int] = []
    with count_lock(lock_base):
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
        with count_lock(lock_base):
            fail_stale_trials(study, storage, cfg.stale_after_s)
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
    with count_lock(lock_base):
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
            score = probe_score(model_.encoder, ctx.probe, cfg.probe)["accuracy"]
            trial.report(score, step)
            log.info("trial %d step %d: probe %.4f", trial.number, step, score)
            if trial.should_prune():
                state["pruned"] = f"pruner ({cfg.pruner['type']}): probe {score:.4f} at step {step}"
                return True
            return False

        result = pretrain(model, ctx.data, train_cfg, progress=False, callback=callback)
        state["steps"] = result.steps
        trial.set_user_attr("steps", result.steps)
        if state["lost"]:
            log.warning("trial %d was marked stale by another worker; dropped", trial.number)
            return TrialState.FAIL
        if result.collapsed:
            state["pruned"] = f"collapse at step {result.collapse_step} (spec §9 std thresholds)"
        if state["pruned"] is not None:
            return _tell(study, trial, TrialState.PRUNED, None, "prune_reason", state, t0)
        final = probe_score(model.encoder, ctx.probe, cfg.probe)
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


# ------------------------------------------------------------------ exports
def _trial_knobs(t: FrozenTrial, defaults: Mapping[str, Any]) -> dict[str, Any]:
    if all(k in t.user_attrs for k in KNOBS):
        return {k: t.user_attrs[k] for k in KNOBS}
    return knobs_from_params(t.params, defaults)


def trials_table(
    study: optuna.Study, defaults: Mapping[str, Any], tuned: Sequence[str]
) -> pd.DataFrame:
    """One row per trial: number, state, value, knob values (full-run units), budget used,
    duration and the prune/fail reason."""
    knob_columns = [k for k in KNOBS if k != "lr" or "lr" in tuned]
    columns = ["number", "state", "value", "default", *knob_columns, "trial_ema_decay",
               "trial_ema_end_decay", "steps", "duration_s", "counted", "reason",
               "intermediate", "params"]  # fmt: skip
    rows = []
    for t in study.get_trials(deepcopy=False):
        knobs = _trial_knobs(t, defaults)
        ua = t.user_attrs
        duration = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "default": ua.get("enqueued") == "default",
                **{k: knobs[k] for k in knob_columns},
                "trial_ema_decay": ua.get("trial_ema_decay"),
                "trial_ema_end_decay": ua.get("trial_ema_end_decay"),
                "steps": ua.get("steps"),
                "duration_s": duration,
                "counted": trial_counts(t),
                "reason": ua.get("prune_reason") or ua.get("fail_reason"),
                "intermediate": json.dumps({str(k): v for k, v in t.intermediate_values.items()}),
                "params": json.dumps(t.params, sort_keys=True),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def study_summary(
    study: optuna.Study,
    cfg: TuneConfig,
    defaults: Mapping[str, Any],
    full_steps: int,
    storage_name: str,
) -> dict[str, Any]:
    """Best vs default, trial counts by state and the pretraining steps pruning saved."""
    trials = study.get_trials(deepcopy=False)
    by_state = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value) if complete else None
    default = next((t for t in trials if t.user_attrs.get("enqueued") == "default"), None)
    counted = [t for t in trials if trial_counts(t) and t.state != TrialState.RUNNING]
    steps_run = sum(int(t.user_attrs.get("steps") or 0) for t in counted)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    saved = sum(cfg.steps - int(t.user_attrs.get("steps") or 0) for t in pruned)
    seconds = [float(t.user_attrs["seconds"]) for t in counted if "seconds" in t.user_attrs]
    tuned = [k for k in SPACE_KEYS if cfg.search_space.get(k) is not None]
    out: dict[str, Any] = {
        "modality": cfg.modality,
        "study_name": study.study_name,
        "storage": storage_name,
        "objective": (
            f"val-half linear-probe accuracy ({cfg.probe.layers} features, "
            f"{cfg.probe.label_fraction:g} of the train labels; C chosen on the other val half)"
        ),
        "direction": "maximize",
        "n_trials_target": cfg.n_trials,
        "n_trials_counted": sum(trial_counts(t) for t in trials),
        "states": by_state,
        "searched": tuned,
        "best": None,
        "default": None,
        "best_minus_default": None,
        "budget": {
            "steps_per_trial": cfg.steps,
            "full_run_steps": full_steps,
            "steps_run": steps_run,
            "steps_if_no_pruning": cfg.steps * len(counted),
            "steps_saved_by_pruning": saved,
            "saved_fraction": saved / (cfg.steps * len(counted)) if counted else 0.0,
            "trial_seconds_mean": float(np.mean(seconds)) if seconds else None,
            "trial_seconds_total": float(np.sum(seconds)) if seconds else 0.0,
        },
    }
    if best is not None:
        out["best"] = {
            "number": best.number,
            "value": best.value,
            "knobs": _trial_knobs(best, defaults),
            "optuna_params": best.params,
        }
    if default is not None:
        out["default"] = {
            "number": default.number,
            "state": default.state.name,
            "value": default.value,
            "knobs": _trial_knobs(default, defaults),
        }
        if best is not None and default.value is not None:
            out["best_minus_default"] = best.value - default.value
    return out


def _placeholder(title: str, message: str) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return fig


# What a trial's value is (README "Tuning"): the figures name it instead of Optuna's
# generic "Objective Value".
OBJECTIVE = "validation probe accuracy"


def _readable_axes(fig: Any) -> None:
    """Log-scale axes (the EMA knobs) get a few plain ticks (0.002, 0.005, 0.01) instead
    of matplotlib's crowded 3x10^-2-style labels; log x labels are rotated."""
    from matplotlib import ticker

    for ax in fig.axes:
        for axis, rotate in ((ax.xaxis, True), (ax.yaxis, False)):
            if axis.get_scale() != "log":
                continue
            axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=6))
            axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(ticker.NullFormatter())
            if rotate:
                for label in axis.get_ticklabels():
                    label.set_rotation(40)
                    label.set_horizontalalignment("right")


def study_figures(study: optuna.Study) -> dict[str, Any]:
    """Optuna's matplotlib figures, labelled with the objective (OBJECTIVE) and with readable
    log-scale ticks; a placeholder figure when a plot needs more trials."""
    from functools import partial

    from optuna.visualization import matplotlib as ovm

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    searched = bool({k for t in complete for k in t.params})
    named = {"target_name": OBJECTIVE}
    plots = {  # name: (plot function, complete trials it needs, needs searched params)
        "optimization_history": (partial(ovm.plot_optimization_history, **named), 1, False),
        "param_importances": (partial(ovm.plot_param_importances, **named), 2, True),
        "parallel_coordinate": (partial(ovm.plot_parallel_coordinate, **named), 2, True),
        "slice": (partial(ovm.plot_slice, **named), 1, True),
        "intermediate_values": (ovm.plot_intermediate_values, 0, False),
    }
    figures: dict[str, Any] = {}
    for name, (plot, need, needs_params) in plots.items():
        title = name.replace("_", " ")
        if len(complete) < need or (needs_params and not searched):
            figures[name] = _placeholder(
                title, f"needs >= {max(need, 1)} complete trials with searched parameters "
                f"(have {len(complete)})"
            )  # fmt: skip
            continue
        if name == "intermediate_values" and not any(t.intermediate_values for t in trials):
            figures[name] = _placeholder(title, "no intermediate probe values were reported")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning on every plot
                result = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            # e.g. importances when every complete trial has the same value
            log.warning("tune figure %s not drawn: %s", name, err)
            figures[name] = _placeholder(title, f"not drawn: {err}")
            continue
        ax = np.ravel(result)[0] if isinstance(result, np.ndarray) else result
        if name == "intermediate_values":
            ax.set_ylabel(f"{OBJECTIVE} (intermediate probe)")
        if name == "optimization_history":
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers
        _readable_axes(ax.figure)
        figures[name] = ax.figure
    return figures
