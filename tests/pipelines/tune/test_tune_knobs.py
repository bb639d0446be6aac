"""The knobs module: knob <-> Optuna parameter mapping, the spec §2 short-run rule, and the
pretrain params a trial trains with."""

from __future__ import annotations

import optuna
import pytest

from d2v_pipeline.pipelines.pretrain.nodes import _configs
from d2v_pipeline.pipelines.tune.config import Range, tune_config_from_dict
from d2v_pipeline.pipelines.tune.knobs import (
    apply_knobs,
    default_knobs,
    knobs_from_params,
    params_from_knobs,
    suggest_knobs,
    trial_pretrain_params,
    trial_tau,
)

DEFAULTS = {"ema_decay": 0.99, "ema_end_decay": 0.999, "mask_prob": 0.6, "top_k": 4, "lr": 1e-3}
SPACE = {
    "one_minus_ema_decay": Range(0.002, 0.025, log=True),
    "ema_end_ratio": Range(0.02, 1.0, log=True),
    "mask_prob": Range(0.3, 0.8),
    "top_k": Range(1, None),
    "lr": None,
}


def test_knobs_round_trip_and_end_decay_never_below_start():
    knobs = {"ema_decay": 0.98, "ema_end_decay": 0.9995, "mask_prob": 0.45, "top_k": 2}
    params = params_from_knobs(knobs, SPACE, DEFAULTS)
    assert set(params) == {"one_minus_ema_decay", "ema_end_ratio", "mask_prob", "top_k"}
    assert knobs_from_params(params, DEFAULTS) == {**knobs, "lr": DEFAULTS["lr"]}

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(200):
        trial = study.ask()
        k = suggest_knobs(trial, SPACE, DEFAULTS, depth=4)
        assert 0.975 <= k["ema_decay"] <= 0.998
        assert k["ema_end_decay"] >= k["ema_decay"]
        assert 1 <= k["top_k"] <= 4  # high: null = the encoder depth
        study.tell(trial, 0.0)


def test_unsearched_end_decay_keeps_the_default_ratio():
    # only the start decay is searched: 1 - end keeps its default share of 1 - start
    k = knobs_from_params({"one_minus_ema_decay": 0.02}, DEFAULTS)
    assert k["ema_decay"] == pytest.approx(0.98)
    assert k["ema_end_decay"] == pytest.approx(1 - 0.02 * 0.1)


def test_short_run_rule_scales_teacher_memory_and_floors():
    # spec §2: tau' = 1 - (1 - tau) * T_full / T_trial, clamped at the floor; tau = 1 stays
    assert trial_tau(0.99, 2000, 500, 0.9) == pytest.approx(0.96)
    assert trial_tau(0.999, 2000, 500, 0.9) == pytest.approx(0.996)
    assert trial_tau(0.95, 2000, 500, 0.9) == 0.9
    assert trial_tau(1.0, 2000, 500, 0.9) == 1.0


def test_trial_params_carry_knobs_budget_and_scaled_schedule(
    image_data, pretrain_params, tune_params
):
    cfg = tune_config_from_dict("image", tune_params(steps=6))
    knobs = {"ema_decay": 0.98, "ema_end_decay": 0.995, "mask_prob": 0.5, "top_k": 1, "lr": 2e-3}
    params = trial_pretrain_params(pretrain_params, knobs, cfg, full_steps=12, anneal_end_step=4)
    _, method, train = _configs("data2vec", image_data["dataset_info"], params)
    assert train.steps == 6 and train.lr == 2e-3 and train.log_every == 2  # tune.train
    assert method.ema_decay == pytest.approx(0.96) and method.ema_end_decay == pytest.approx(0.99)
    assert method.ema_anneal_end_step == 2  # keeps tau_n / T
    assert method.top_k == 1 and method.mask.mask_prob == 0.5
    # the caller's dict is untouched
    assert pretrain_params["data2vec"].get("ema_decay") == 0.99


def test_default_knobs_come_from_the_pretrain_config(image_data, pretrain_params):
    _, method, train = _configs("data2vec", image_data["dataset_info"], pretrain_params)
    knobs = default_knobs(method, train)
    assert knobs == {"ema_decay": 0.99, "ema_end_decay": 0.999, "mask_prob": 0.6, "top_k": 2,
                     "lr": 1e-3}  # fmt: skip
    rebuilt = _configs("data2vec", image_data["dataset_info"], apply_knobs(pretrain_params, knobs))
    assert rebuilt[1] == method
