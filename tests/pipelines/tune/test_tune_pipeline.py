"""The tune pipeline through Kedro: registered but not in __default__, and a smoke run of the
image lane in a temporary copy of the project writes every catalog output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro.framework.project import pipelines
from kedro.framework.startup import bootstrap_project
from tune_helpers import PROJECT_ROOT


def _kedro(project: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "kedro", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "PYTHONWARNINGS": "ignore"},
    )
    if proc.returncode != 0:
        pytest.fail(f"kedro {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def test_tune_is_registered_per_modality_and_not_in_default():
    bootstrap_project(PROJECT_ROOT)
    tune = pipelines["tune"]
    names = {n.name for n in tune.nodes}
    assert names == {f"{m}.{step}" for m in ("image", "speech", "text")
                     for step in ("run_study", "export_study")}  # fmt: skip
    assert not names & {n.name for n in pipelines["__default__"].nodes}
    assert {"image.model_input", "params:image.tune", "params:image.pretrain"} <= tune.inputs()


def test_smoke_tune_run_writes_every_output(project_copy, data_root_of):
    _kedro(project_copy, "run", "--env", "smoke", "--pipeline", "ingest", "--namespaces", "image")
    _kedro(project_copy, "run", "--env", "smoke", "--pipeline", "tune", "--namespaces", "image")
    root = data_root_of(project_copy, "smoke")  # data/smoke: never the base results
    out = root / "07_model_output" / "image" / "tune"
    rep = root / "08_reporting" / "image" / "tune"
    assert (out / "study" / "study.journal").is_file()
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["number"]) == [0, 1, 2]  # smoke n_trials
    run = json.loads((out / "last_run.json").read_text())
    assert run["trials_run"] == [0, 1, 2] and run["counted_after"] == 3
    summary = json.loads((rep / "summary.json").read_text())
    assert summary["n_trials_counted"] == 3 and summary["default"]["number"] == 0
    best = yaml.safe_load((rep / "best_params.yml").read_text())
    if summary["best"] is not None:
        assert set(best["image"]["pretrain"]["data2vec"]) == {
            "ema_decay", "ema_end_decay", "top_k", "mask",
        }  # fmt: skip
    pngs = sorted(p.stem for p in (rep / "figures").glob("*.png"))
    assert pngs == sorted(
        ["intermediate_values", "optimization_history", "parallel_coordinate",
         "param_importances", "slice"]
    )  # fmt: skip
