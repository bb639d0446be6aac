"""The tune config module: the shipped parameters parse, and every error names its key."""

from __future__ import annotations

import optuna
import pytest
from tune_helpers import conf_params

from d2v_pipeline.pipelines.tune.config import (
    TuneConfigError,
    rung_steps,
    study_pruner,
    tune_config_from_dict,
)


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
    with pytest.raises(TuneConfigError, match=r"image\.tune\.n_trail: unknown key"):
        tune_config_from_dict("image", {**tune_params(), "n_trail": 3})
    with pytest.raises(TuneConfigError, match=r"search_space\.mask_prob\.high: 1\.5 is outside"):
        tune_config_from_dict("image", tune_params(search_space={"mask_prob": {"high": 1.5}}))
    with pytest.raises(TuneConfigError, match=r"image\.tune\.pruner\.type"):
        tune_config_from_dict("image", tune_params(pruner={"type": "hyperbole"}))
    with pytest.raises(TuneConfigError, match=r"image\.tune\.n_trials: 0 is outside \[1, inf\]"):
        tune_config_from_dict("image", tune_params(n_trials=0))
    with pytest.raises(TuneConfigError, match=r"tune\.pruner: bad argument for median"):
        tune_config_from_dict("image", tune_params(pruner={"n_warmup_step": 3}))
    with pytest.raises(TuneConfigError, match=r"image\.tune\.enqueue\.tau: unknown key"):
        tune_config_from_dict("image", tune_params(enqueue=[{"tau": 0.9}]))


def _cfg(tune_params, pruner, steps=500, report_every=100):
    params = tune_params(steps=steps, report_every=report_every, train={"log_every": 20})
    params["pruner"] = pruner
    return tune_config_from_dict("image", params)


def test_rung_pruners_compare_trials_at_probe_steps(tune_params):
    # successive halving, reduction factor 4: rungs at 100 and 400 steps of 500
    sh = _cfg(tune_params, {"type": "successive_halving", "min_resource": 100})
    assert rung_steps(sh) == [[100, 400]]
    # hyperband, factor 3, max_resource = tune.steps: floor(log3(500/100)) + 1 = 2 brackets
    hb = _cfg(tune_params, {"type": "hyperband", "min_resource": 100})
    assert rung_steps(hb) == [[100, 300], [300]]
    # max_resource = the budget: hyperband prunes from the first trials on, whereas Optuna's
    # "auto" waits for a complete trial (a study of 8 trials, each worse at step 100)
    for pruner, prunes in [(study_pruner(hb), True), (optuna.pruners.HyperbandPruner(100), False)]:
        study = optuna.create_study(study_name="hb", direction="maximize", pruner=pruner)
        pruned = []
        for i in range(8):
            trial = study.ask()
            trial.report(1.0 - i / 10, 100)
            pruned.append(trial.should_prune())
        assert any(pruned) == prunes
    assert rung_steps(_cfg(tune_params, {"type": "median"})) == []
    # Optuna's defaults (1, "auto") and off-probe steps are refused, naming the key
    for pruner, message in [
        ({"type": "hyperband"}, r"None: set it in steps, a multiple of"),
        ({"type": "successive_halving", "min_resource": "auto"}, r"'auto'"),
        ({"type": "successive_halving", "min_resource": 150}, r"150 must be a multiple of"),
        ({"type": "hyperband", "min_resource": 500}, r"500 must be .* below tune\.steps 500"),
    ]:
        with pytest.raises(TuneConfigError, match=r"tune\.pruner\.min_resource: " + message):
            rung_steps(_cfg(tune_params, pruner))
