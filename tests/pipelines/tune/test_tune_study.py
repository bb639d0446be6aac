"""The tune nodes on small real data: a smoke study end to end, resuming, pruning, NaN trials,
stale trials, applying the best parameters, and two workers sharing one study."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import optuna
import pytest
import yaml
from kedro.config import OmegaConfigLoader
from optuna.trial import TrialState
from safetensors.torch import save_file
from tune_helpers import PROJECT_ROOT, smoke_runtime

from d2v_pipeline.datasets import YAMLDataset
from d2v_pipeline.pipelines.pretrain.nodes import _configs
from d2v_pipeline.pipelines.tune.config import TuneConfigError
from d2v_pipeline.pipelines.tune.nodes import export_tuning_results, run_tuning_study
from d2v_pipeline.pipelines.tune.storage import open_storage
from d2v_pipeline.settings import CONFIG_LOADER_ARGS

WORKER = Path(__file__).with_name("tune_worker.py")


def _run(data, pretrain_params, tune, study_dir):
    record = run_tuning_study(
        data["model_input"], data["label_subsets"], data["dataset_info"], pretrain_params, tune,
        smoke_runtime(), study_dir,
    )  # fmt: skip
    table, best, summary, figures = export_tuning_results(
        record, data["dataset_info"], pretrain_params, tune, study_dir
    )
    plt.close("all")
    return record, table, best, summary, figures


def test_smoke_study_runs_and_resumes_to_the_new_target(
    image_data, pretrain_params, tune_params, tmp_path
):
    tune = tune_params(n_trials=2)
    record, table, best, summary, figures = _run(image_data, pretrain_params, tune, tmp_path)
    assert record["trials_run"] == [0, 1] and record["counted_after"] == 2
    # trial 0 is the pretrain config itself, so "best vs default" is measured
    assert table.loc[0, "default"] and table.loc[0, "ema_decay"] == 0.99
    assert summary["default"]["number"] == 0
    assert set(table["state"]) <= {"COMPLETE", "PRUNED"}
    complete = table[table["state"] == "COMPLETE"]
    assert summary["best"]["value"] == complete["value"].max()
    assert 0.0 <= summary["best"]["value"] <= 1.0
    assert set(figures) == {
        "optimization_history", "param_importances", "parallel_coordinate", "slice",
        "intermediate_values",
    }  # fmt: skip
    assert best["image"]["pretrain"]["data2vec"]["top_k"] in (1, 2)

    # a re-run with a higher target continues the same study: only the missing trials run
    record, table, _, summary, _ = _run(
        image_data, pretrain_params, {**tune, "n_trials": 3}, tmp_path
    )
    assert record["counted_before"] == 2 and record["trials_run"] == [2]
    assert list(table["number"]) == [0, 1, 2]
    assert table["default"].sum() == 1  # the default config is not enqueued twice
    assert summary["n_trials_counted"] == 3
    # ... and a re-run at the target runs nothing
    record, *_ = _run(image_data, pretrain_params, {**tune, "n_trials": 3}, tmp_path)
    assert record["trials_run"] == []
    # a different objective (another trial budget) must not be mixed into the same study
    with pytest.raises(TuneConfigError, match=r"\(steps: 8 -> 6; trial_train\.steps: 8 -> 6\)"):
        _run(image_data, pretrain_params, {**tune, "n_trials": 4, "steps": 6}, tmp_path)


def test_pruned_trial_is_recorded_with_reason_and_saved_steps(
    image_data, pretrain_params, tune_params, tmp_path
):
    # a threshold no probe can reach prunes every trial at its first intermediate probe
    tune = tune_params(n_trials=2)
    tune["pruner"] = {"type": "threshold", "lower": 1.01}
    _, table, best, summary, _ = _run(image_data, pretrain_params, tune, tmp_path)
    assert list(table["state"]) == ["PRUNED", "PRUNED"]
    assert table["reason"].str.startswith("pruner (threshold)").all()
    assert list(table["steps"]) == [4, 4]  # stopped at report_every, not the 8-step budget
    assert summary["budget"]["steps_saved_by_pruning"] == 2 * (8 - 4)
    assert summary["states"]["pruned"] == 2 and summary["best"] is None
    assert best == {}  # nothing complete: applying the file changes nothing


@pytest.mark.filterwarnings("ignore:Fixed parameter lr")
def test_nan_trial_fails_with_reason_and_the_study_goes_on(
    image_data, pretrain_params, tune_params, tmp_path
):
    # an absurd learning rate, tried first, makes the loss NaN at once (a real NaN, no mock)
    tune = tune_params(
        n_trials=3,
        search_space={"lr": {"low": 1e-4, "high": 1e-2, "log": True}},
        enqueue=[{"lr": 1.0e10}],
    )
    record, table, _, summary, _ = _run(image_data, pretrain_params, tune, tmp_path)
    assert record["counted_after"] == 3
    nan_trial = table[table["lr"] == 1.0e10].iloc[0]
    assert nan_trial["state"] == "FAIL" and "non-finite loss" in nan_trial["reason"]
    assert nan_trial["counted"]  # a verdict on its config: not re-run
    assert summary["states"]["fail"] == 1
    assert (table["state"] != "FAIL").sum() == 2  # the other trials still ran


def test_successive_halving_needs_a_min_resource_on_a_probe_step(
    image_data, pretrain_params, tune_params, tmp_path
):
    tune = tune_params(n_trials=2)  # smoke: a probe every 4 of 8 steps
    tune["pruner"] = {"type": "successive_halving", "min_resource": 2}
    with pytest.raises(TuneConfigError, match=r"tune\.pruner\.min_resource: 2 must be a multi"):
        _run(image_data, pretrain_params, tune, tmp_path)
    tune["pruner"] = {"type": "successive_halving", "min_resource": 4, "reduction_factor": 2}
    record, table, _, summary, _ = _run(image_data, pretrain_params, tune, tmp_path)
    assert record["trials_run"] == [0, 1]  # the refused run started no trial
    # trial 1 was compared with trial 0 at its step-4 probe: it went on only if not worse
    first, second = table.loc[0], table.loc[1]
    assert first["state"] == "COMPLETE"
    step4 = [json.loads(t)["4"] for t in table["intermediate"]]
    if step4[1] < step4[0]:
        assert second["state"] == "PRUNED" and second["steps"] == 4
        assert second["reason"].startswith("pruner (successive_halving)")
    else:
        assert second["state"] == "COMPLETE"
    assert summary["probe_rank_correlation"] == {}  # 2 trials: too few to rank


def test_trial_of_a_killed_worker_is_marked_stale_and_replaced(
    image_data, pretrain_params, tune_params, tmp_path
):
    tune = tune_params(n_trials=1, enqueue_default=False)
    # a trial left RUNNING by a process that no longer exists on this host
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    storage, _ = open_storage(None, tmp_path)
    study = optuna.create_study(study_name="d2v_image", storage=storage, direction="maximize")
    trial = study.ask()
    trial.set_user_attr("worker_host", socket.gethostname())
    trial.set_user_attr("worker_pid", int(dead.stdout))
    record, table, _, summary, _ = _run(image_data, pretrain_params, tune, tmp_path)
    assert record["trials_run"] == [1]
    assert table.loc[0, "state"] == "FAIL" and table.loc[0, "reason"].startswith("stale")
    assert not table.loc[0, "counted"] and table.loc[1, "state"] in ("COMPLETE", "PRUNED")
    # trial 1 re-ran trial 0 (killed before it drew parameters, so it draws its own)
    assert table.loc[0, "replaced_by"] == 1 and table.loc[1, "replaces"] == 0
    assert summary["replaced"] == {"0": 1}


def test_a_lower_precision_runtime_is_part_of_the_study_setup(
    image_data, pretrain_params, tune_params, tmp_path, caplog
):
    tune = tune_params(n_trials=1)
    bf16 = {**smoke_runtime(), "precision": "bf16", "nproc_per_node": 2}
    record = run_tuning_study(
        image_data["model_input"], image_data["label_subsets"], image_data["dataset_info"],
        pretrain_params, tune, bf16, tmp_path,
    )  # fmt: skip
    assert record["trials_run"] == [0]
    assert "a tuning trial runs in one process" in caplog.text  # nproc_per_node: ignored
    storage, _ = open_storage(None, tmp_path)
    study = optuna.load_study(study_name="d2v_image", storage=storage)
    assert study.user_attrs["setup"]["precision"] == "bf16"
    assert "precision" not in study.user_attrs["setup"]["trial_train"]
    # bf16 trials learn other weights: an fp32 worker may not add trials to this study
    with pytest.raises(TuneConfigError, match=r"precision: 'bf16' -> None"):
        _run(image_data, pretrain_params, {**tune, "n_trials": 2}, tmp_path)


def test_best_params_yaml_overrides_pretrain_parameters(
    image_data, pretrain_params, tune_params, tmp_path
):
    tuned = {"ema_decay": 0.98, "ema_end_decay": 0.995, "mask_prob": 0.45, "top_k": 1}
    tune = tune_params(n_trials=1, enqueue_default=False, enqueue=[tuned])
    *_, best, summary, _ = _run(image_data, pretrain_params, tune, tmp_path / "study")
    assert summary["best"]["knobs"] == {**tuned, "lr": 1e-3}
    # the documented way to apply it: copy the file into conf/local/
    conf = tmp_path / "conf"
    (conf / "local").mkdir(parents=True)
    (conf / "base").symlink_to(PROJECT_ROOT / "conf" / "base")
    YAMLDataset(str(conf / "local" / "parameters_pretrain.yml")).save(best)
    loader = OmegaConfigLoader(conf_source=str(conf), **CONFIG_LOADER_ARGS)
    params = loader["parameters"]["image"]["pretrain"]
    _, method, train = _configs("data2vec", image_data["dataset_info"], params)
    assert (method.ema_decay, method.ema_end_decay) == (0.98, 0.995)
    assert (method.top_k, method.mask.mask_prob) == (1, 0.45)
    # everything else still comes from conf/base
    with open(PROJECT_ROOT / "conf" / "base" / "parameters_pretrain.yml", encoding="utf-8") as fh:
        base = yaml.safe_load(fh)["image"]["pretrain"]
    assert (
        train.steps == base["train"]["steps"] and method.loss_beta == base["data2vec"]["loss_beta"]
    )
    assert method.mask.min_num_patches == base["data2vec"]["mask"]["min_num_patches"]


def test_two_workers_share_one_study_without_lost_or_extra_trials(
    image_data, pretrain_params, tune_params, tmp_path
):
    save_file(image_data["model_input"], str(tmp_path / "arrays.safetensors"))
    inputs = {
        "dataset_info": image_data["dataset_info"],
        "label_subsets": image_data["label_subsets"],
        "pretrain": pretrain_params,
        "tune": tune_params(n_trials=4),
        "runtime": smoke_runtime(),
    }
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))
    study_dir = tmp_path / "study"
    logs = [(tmp_path / f"w{i}.log").open("w") for i in range(2)]  # files: a pipe could fill
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(tmp_path),
                str(study_dir),
                str(tmp_path / f"w{i}.json"),
            ],
            stdout=logs[i],
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 300
    while not all((tmp_path / f"w{i}.ready").exists() for i in range(2)):
        assert time.monotonic() < deadline and all(w.poll() is None for w in workers), "no start"
        time.sleep(0.05)
    (tmp_path / "go").touch()  # both workers start their studies together
    for i, w in enumerate(workers):
        w.wait(timeout=300)
        logs[i].close()
        assert w.returncode == 0, (tmp_path / f"w{i}.log").read_text()[-3000:]
    records = [json.loads((tmp_path / f"w{i}.json").read_text()) for i in range(2)]
    ran = sorted(n for r in records for n in r["trials_run"])
    assert ran == [0, 1, 2, 3]  # each trial run by exactly one worker
    assert all(r["trials_run"] for r in records)  # both workers took part
    storage, _ = open_storage(None, study_dir)
    study = optuna.load_study(study_name="d2v_image", storage=storage)
    trials = study.get_trials()
    assert len(trials) == 4
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert sum(t.user_attrs.get("enqueued") == "default" for t in trials) == 1
    # no two trials share a configuration (each worker draws its own startup configs)
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4
