"""Unit tests of the tuning module: config validation, knob mapping, short-run rule, probe data."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch
from tune_helpers import conf_params

from d2v_pipeline.pipelines.finetune.nodes import subset_indices
from d2v_pipeline.pipelines.pretrain.nodes import _configs
from d2v_pipeline.tuning import (
    Range,
    TuneConfigError,
    apply_knobs,
    default_knobs,
    describe_storage,
    knobs_from_params,
    make_probe_data,
    params_from_knobs,
    split_val_halves,
    suggest_knobs,
    trial_pretrain_params,
    trial_tau,
    tune_config_from_dict,
)

DEFAULTS = {"ema_decay": 0.99, "ema_end_decay": 0.999, "mask_prob": 0.6, "top_k": 4, "lr": 1e-3}
SPACE = {
    "one_minus_ema_decay": Range(0.002, 0.025, log=True),
    "ema_end_ratio": Range(0.02, 1.0, log=True),
    "mask_prob": Range(0.3, 0.8),
    "top_k": Range(1, None),
    "lr": None,
}


@pytest.mark.parametrize("env", ["base", "smoke"])
def test_shipped_tune_parameters_are_valid(env):
    params = conf_params("tune", env)
    assert set(params) == {"image", "speech", "text"}
    for modality, block in params.items():
        cfg = tune_config_from_dict(modality, block["tune"])
        assert cfg.study_name == f"d2v_{modality}" and cfg.storage is None
        assert {k for k, r in cfg.search_space.items() if r is not None} >= {
            "one_minus_ema_decay", "ema_end_ratio", "mask_prob", "top_k",
        }  # fmt: skip


def test_config_errors_name_the_key(tune_params):
    with pytest.raises(TuneConfigError, match=r"image\.tune: unknown key 'n_trail'"):
        tune_config_from_dict("image", {**tune_params(), "n_trail": 3})
    with pytest.raises(TuneConfigError, match=r"search_space\.mask_prob: range"):
        tune_config_from_dict("image", tune_params(search_space={"mask_prob": {"high": 1.5}}))
    with pytest.raises(TuneConfigError, match=r"image\.tune\.pruner\.type"):
        tune_config_from_dict("image", tune_params(pruner={"type": "hyperbole"}))
    with pytest.raises(TuneConfigError, match=r"image\.tune\.n_trials: must be > 0"):
        tune_config_from_dict("image", tune_params(n_trials=0))
    with pytest.raises(TuneConfigError, match=r"tune\.pruner: bad argument for median"):
        tune_config_from_dict("image", tune_params(pruner={"n_warmup_step": 3}))
    with pytest.raises(TuneConfigError, match=r"enqueue\[0\]: unknown knob 'tau'"):
        tune_config_from_dict("image", tune_params(enqueue=[{"tau": 0.9}]))


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
    assert train.steps == 6 and train.lr == 2e-3 and train.threads == 1
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


def test_val_halves_are_disjoint_stratified_and_deterministic():
    y = np.repeat(np.arange(5), 7)
    a, b = split_val_halves(y, seed=0)
    assert set(a).isdisjoint(b) and len(a) + len(b) == len(y)
    assert set(y[a]) == set(y[b]) == set(range(5))
    a2, b2 = split_val_halves(y, seed=0)
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    assert not np.array_equal(a, split_val_halves(y, seed=1)[0])
    # one row per class (the smoke speech set): still two non-empty halves
    a, b = split_val_halves(np.arange(8), seed=0)
    assert len(a) == len(b) == 4 and set(a).isdisjoint(b)


def test_probe_data_never_reads_test_and_accepts_per_seed_subsets(image_data):
    mi = dict(image_data["model_input"])
    mi.pop("test.x"), mi.pop("test.y")  # the probe must not need the test split
    # ingest writes {fraction: {seed: rows}}; the older flat {fraction: rows} also works
    per_seed = image_data["label_subsets"]
    assert isinstance(per_seed["0.1"], dict)
    flat = {k: v["0"] for k, v in per_seed.items()}
    idx_flat = subset_indices(flat, 0.1, 0)
    idx_seed = subset_indices(per_seed, 0.1, 0)
    assert np.array_equal(idx_flat, idx_seed)
    data = make_probe_data(mi, idx_seed, split_seed=0)
    assert torch.equal(data.train[1], mi["train.y"][torch.as_tensor(idx_seed)])
    n_val = len(mi["val.y"])
    assert len(data.select[1]) + len(data.score[1]) == n_val


def test_storage_description_hides_passwords(tmp_path):
    url = "postgresql://tuner:s3cret@db.example:5432/optuna"
    assert "s3cret" not in describe_storage(url, None)
    assert describe_storage(None, tmp_path).endswith("study.journal")


def test_study_figures_name_the_objective_and_keep_log_ticks_apart():
    """Real Optuna plots of a study over the shipped search space (an analytic objective
    instead of pretraining): the objective is named, and log-scale tick labels are plain
    numbers that do not overlap."""
    import matplotlib.pyplot as plt

    from d2v_pipeline.tuning import OBJECTIVE, study_figures

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        a = trial.suggest_float("one_minus_ema_decay", 0.002, 0.025, log=True)
        b = trial.suggest_float("ema_end_ratio", 0.02, 1.0, log=True)
        m = trial.suggest_float("mask_prob", 0.3, 0.8)
        trial.report(0.4 + m / 10, 100)
        return 0.45 + m / 10 + a + b / 100

    study.optimize(objective, n_trials=8)
    figures = study_figures(study)
    try:
        texts, log_axes = [], 0
        for fig in figures.values():
            fig.canvas.draw()
            renderer = fig.canvas.get_renderer()
            texts += [t.get_text() for t in fig.findobj(plt.Text)]
            for ax in fig.axes:
                for axis in (ax.xaxis, ax.yaxis):
                    if axis.get_scale() != "log":
                        continue
                    log_axes += 1
                    lo, hi = sorted(axis.get_view_interval())
                    locs, all_labels = axis.get_majorticklocs(), axis.get_ticklabels()
                    labels = [  # the labels drawn: ticks inside the view
                        label
                        for loc, label in zip(locs, all_labels, strict=True)
                        if lo <= loc <= hi and label.get_text()
                    ]
                    assert 2 <= len(labels) <= 6
                    assert not any("times" in t.get_text() for t in labels)  # no 3x10^-2
                    assert not any(t.get_text() for t in axis.get_minorticklabels())
                    boxes = [t.get_window_extent(renderer) for t in labels]
                    pairs = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]]
                    assert not any(a.overlaps(b) for a, b in pairs)
        assert log_axes >= 4  # slice x axes and parallel-coordinate axes of both EMA knobs
        assert not any("Objective Value" in t for t in texts)
        assert sum(OBJECTIVE in t for t in texts) >= 4
    finally:
        plt.close("all")
