"""The tune config module: the shipped parameters parse, and every error names its key."""

from __future__ import annotations

import pytest
from tune_helpers import conf_params

from d2v_pipeline.pipelines.tune.config import TuneConfigError, tune_config_from_dict


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
