"""The runtime block: parsing, device and precision choices, and launching worker processes
through torch elastic (real processes, gloo)."""

from __future__ import annotations

import os
import time

import pytest
import runtime_probes
import torch

from d2v_pipeline.data2vec import ConfigError
from d2v_pipeline.data2vec.runtime import (
    DistInfo,
    DistributedRunError,
    Runtime,
    autocast,
    grad_scaler,
    launch,
    resolve_device,
    runtime_from_dict,
    shard_slice,
)

# "no hang": a dead worker is reported in seconds (the agent stops the others at once, and
# every collective times out after Runtime.timeout_s = 120 s anyway); the bound leaves room
# for process start-up on a loaded 2-core machine
FAILURE_BOUND_S = 120.0


def test_runtime_block_defaults_and_errors_name_the_key() -> None:
    assert runtime_from_dict(None) == Runtime() == runtime_from_dict({})
    rt = Runtime()
    assert (rt.device, rt.precision, rt.compile, rt.nproc_per_node) == ("cpu", "fp32", False, 1)
    assert (rt.workers, rt.threads) == (0, None)
    parsed = runtime_from_dict({"device": "auto", "precision": "bf16", "threads": 1}, "image")
    assert parsed == Runtime(device="auto", precision="bf16", threads=1)
    bad = [
        ({"device": "tpu"}, r"image\.runtime\.device"),
        ({"precision": "fp8"}, r"image\.runtime\.precision"),
        ({"nproc_per_node": 0}, r"nproc_per_node must be >= 1"),
        ({"threads": "two"}, r"image\.runtime\.threads"),
        ({"gpus": 2}, r"unknown key 'gpus'"),
    ]
    for values, message in bad:
        with pytest.raises(ConfigError, match=message):
            runtime_from_dict(values, "image.runtime")


def test_devices_and_precisions_on_this_cpu() -> None:
    cpu = resolve_device(Runtime())
    assert cpu == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device(Runtime(device="auto")) == cpu
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device(Runtime(device="cuda"))
    with pytest.raises(ConfigError, match=r"fp16.*needs CUDA.*bf16"):
        resolve_device(Runtime(precision="fp16"))
    with autocast(Runtime(), cpu):
        assert not torch.is_autocast_enabled("cpu")
    with autocast(Runtime(precision="bf16"), cpu):
        assert torch.is_autocast_enabled("cpu")
        assert torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype == (
            torch.bfloat16
        )
    assert grad_scaler(Runtime(), cpu) is None
    assert grad_scaler(Runtime(precision="bf16"), cpu) is None


@pytest.mark.parametrize(("batch_size", "world"), [(8, 2), (7, 2), (10, 3), (3, 3)])
def test_shard_slices_split_the_batch_like_tensor_split(batch_size, world) -> None:
    expected = torch.tensor_split(torch.arange(batch_size), world)
    for rank in range(world):
        info = DistInfo(rank, world, rank, rank == 0)
        rows = torch.arange(batch_size)[shard_slice(batch_size, info)]
        assert torch.equal(rows, expected[rank])


def test_one_process_runs_in_this_process_without_a_group() -> None:
    out = launch(runtime_probes.where_am_i, Runtime(nproc_per_node=1), "here")
    assert out == {"tag": "here", "pid": os.getpid(), "group": False, "info": (0, 1, 0, True)}


def test_two_workers_group_up_over_gloo_and_sum_gradients() -> None:
    out = launch(runtime_probes.probe, Runtime(nproc_per_node=2), 7)
    assert out["pid"] != os.getpid()  # rank 0 ran in a worker process
    views = out["views"]
    assert [v["info"] for v in views] == [(0, 2, 0, True), (1, 2, 1, False)]
    assert {v["backend"] for v in views} == {"gloo"}
    assert {v["threads"] for v in views} == {1}  # threads unset: one per worker (torchrun's)
    assert [v["sum"] for v in views] == [3.0, 3.0]
    assert [v["rows"] for v in views] == [slice(0, 4), slice(4, 7)]
    # used by rank 0 only -> its gradient; by both -> the sum; by nobody -> still None
    for v in views:
        assert v["grads"] == [[1.0] * 3, [3.0] * 3, None]


def test_a_worker_that_raises_stops_the_job_with_its_rank_and_error() -> None:
    start = time.monotonic()
    with pytest.raises(DistributedRunError) as caught:
        launch(runtime_probes.fail_on_rank_1, Runtime(nproc_per_node=2), "bad shard 42")
    assert time.monotonic() - start < FAILURE_BOUND_S
    err = caught.value
    assert (err.rank, err.exitcode) == (1, 1)
    message = str(err)
    assert "rank 1" in message and "ValueError: bad shard 42" in message
    assert "resumes from the last checkpoint" in message
