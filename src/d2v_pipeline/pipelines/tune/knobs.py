"""data2vec's tuned knobs and the Optuna parameters that stand for them.

Knobs are expressed in the units of the full pretraining run (``<m>.pretrain``), so the best
values can be pasted into parameters_pretrain.yml as they are. Optuna searches
``1 - ema_decay`` and the ratio ``(1 - ema_end_decay) / (1 - ema_decay)`` instead of the two
decays, so the end decay is never below the start decay. A trial's shorter run converts the
knobs with the short-run rule of spec §2: ``1 - tau`` scales by ``T_full / T_trial``
(clamped at ``ema_floor``) and the anneal end keeps its share of the run.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import optuna

from .config import SPACE_KEYS, Range, TuneConfig, TuneConfigError

# The Optuna parameter that moves each knob (``ema_end_decay`` moves through the ratio).
KNOB_PARAM = {
    "ema_decay": "one_minus_ema_decay",
    "ema_end_decay": "ema_end_ratio",
    "mask_prob": "mask_prob",
    "top_k": "top_k",
    "lr": "lr",
}


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
