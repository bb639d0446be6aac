"""The training command line under torchrun and the Kedro node train the same thing and
hand it to each other through the catalog and the resumable state.

In a copy of the project with the image lane ingested (smoke), ``torchrun --standalone
--nproc-per-node 2 -m d2v_pipeline.train`` trains a tiny data2vec encoder on two gloo ranks
and saves the node's outputs; the Kedro node with the same parameters then reuses that
finished state (nothing is trained again), and the node started with
``runtime.nproc_per_node=2`` (torch's elastic launcher, no torchrun) trains bitwise the same
weights as the torchrun job. Real processes throughout; a few steps of a 16-wide encoder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from d2v_pipeline.io import CONTENT_HASH_KEY, read_safetensors

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
STEPS = 4
# the same overrides for every command: the run key (configs + data + precision) must match
TINY = ",".join(
    [
        f"image.pretrain.train.steps={STEPS}",
        "image.pretrain.train.checkpoint_every=2",
        "image.pretrain.encoder.dim=16",
        "image.pretrain.encoder.ffn_dim=32",
        "image.runtime.threads=1",  # 2 processes on 2 cores
    ]
)
TRAIN_CLI = ["-m", "d2v_pipeline.train", "--env", "smoke", "--modality", "image"]
NODE = ["run", "--env", "smoke", "--nodes", "image.pretrain_data2vec", "--params"]


def _run(project: Path, *cmd: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``project``; the test fails with its output if it fails."""
    proc = subprocess.run(
        cmd, cwd=project, capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n"
            f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def _outputs(root: Path, method: str) -> dict:
    """What the node (or the command line) wrote for ``image.<method>``."""
    tensors, header = read_safetensors(root / f"06_models/image/{method}/encoder.safetensors")
    return {
        "tensors": tensors,
        "header": header,
        "meta": json.loads((root / f"06_models/image/{method}/metadata.json").read_text()),
        "history": pd.read_csv(root / f"07_model_output/image/{method}/pretrain_history.csv"),
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory, make_project, kedro_cli) -> Path:
    """A project copy with the smoke image lane ingested."""
    project = make_project(tmp_path_factory.mktemp("cli_torchrun") / "project")
    kedro_cli(project, "run", "--env", "smoke", "--pipelines", "ingest", "--namespaces", "image")
    return project


@pytest.fixture(scope="module")
def torchrun_job(project, data_root_of) -> dict:
    """The torchrun job's outputs and the bytes of its final checkpoint."""
    cli = _run(
        project, TORCHRUN, "--standalone", "--nproc-per-node", "2", *TRAIN_CLI,
        "--method", "data2vec", "--params", TINY,
    )  # fmt: skip
    root = data_root_of(project)
    out = _outputs(root, "data2vec")
    state = root / "06_models/image/train_state/data2vec" / out["meta"]["run_key"]
    return {**out, "stdout": cli.stdout, "state": state, "checkpoint": _checkpoint_bytes(state)}


def _checkpoint_bytes(state: Path) -> bytes:
    return (state / "checkpoint.safetensors").read_bytes()


def test_torchrun_job_trains_on_two_ranks_and_only_rank_0_writes(torchrun_job):
    meta = torchrun_job["meta"]
    assert meta["world_size"] == 2 and meta["resumed_from_step"] is None
    assert meta["steps"] == STEPS and meta["config"]["train"]["steps"] == STEPS
    assert torchrun_job["history"]["step"].tolist() == [2, 4]
    assert "world size 2" in torchrun_job["stdout"] and torchrun_job["stdout"].count("saved") == 1
    # one state folder, one final and one previous checkpoint: no temp files, no per-rank copies
    assert [p.name for p in torchrun_job["state"].parent.iterdir()] == [meta["run_key"]]
    assert sorted(p.name for p in torchrun_job["state"].iterdir()) == [
        "checkpoint.previous.safetensors",
        "checkpoint.safetensors",
    ]


def test_kedro_run_reuses_the_torchrun_state_without_training(
    project, data_root_of, kedro_cli, torchrun_job
):
    kedro_cli(project, *NODE, TINY)
    out = _outputs(data_root_of(project), "data2vec")
    meta, job = out["meta"], torchrun_job["meta"]
    assert meta["run_key"] == job["run_key"]
    # resumed at the last step: 0 steps run here, the torchrun job's training time and history
    assert meta["resumed_from_step"] == meta["steps"] == STEPS
    assert meta["wall_time_s"] == job["wall_time_s"]
    pd.testing.assert_frame_equal(out["history"], torchrun_job["history"])
    # the same weights and encoder header (content hash included) as the torchrun job wrote
    assert out["header"] == torchrun_job["header"]
    assert out["header"][CONTENT_HASH_KEY] == job[CONTENT_HASH_KEY]
    assert out["tensors"].keys() == torchrun_job["tensors"].keys()
    for name, tensor in out["tensors"].items():
        assert torch.equal(tensor, torchrun_job["tensors"][name]), name
    assert _checkpoint_bytes(torchrun_job["state"]) == torchrun_job["checkpoint"]  # untouched


def test_kedro_node_on_two_elastic_workers_trains_what_torchrun_trained(
    project, data_root_of, kedro_cli, torchrun_job
):
    """nproc_per_node=2: the node starts its own 2 workers (torch elastic launch, gloo), from
    scratch in another state folder, and ends with bitwise the torchrun job's weights (same
    world size, same code)."""
    elastic = f"{TINY},image.runtime.nproc_per_node=2,image.pretrain.state_dir=data/smoke/elastic"
    kedro_cli(project, *NODE, elastic)
    out = _outputs(data_root_of(project), "data2vec")
    assert out["meta"]["world_size"] == 2 and out["meta"]["resumed_from_step"] is None
    assert out["meta"]["run_key"] == torchrun_job["meta"]["run_key"]  # processes are not in it
    assert (project / "data/smoke/elastic/data2vec" / out["meta"]["run_key"]).is_dir()
    for name, tensor in out["tensors"].items():
        assert torch.equal(tensor, torchrun_job["tensors"][name]), name


def test_a_bad_runtime_value_stops_the_command_before_training(project, data_root_of):
    """Every bad value is named with where it was set; nothing is trained or written."""
    bad = f"{TINY},image.runtime.precision=fp8,image.runtime.nproc_per_node=0"
    cmd = [sys.executable, *TRAIN_CLI, "--method", "masked_recon", "--params", bad]
    proc = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "--params: image.runtime.precision: 'fp8' is not one of" in proc.stderr
    assert "--params: image.runtime.nproc_per_node: 0 is outside [1, inf]" in proc.stderr
    root = data_root_of(project)
    assert not (root / "06_models/image/masked_recon").exists()
    assert not (root / "06_models/image/train_state/masked_recon").exists()
