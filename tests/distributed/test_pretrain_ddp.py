"""Data-parallel pretraining on real worker processes (gloo, one thread each, tiny models):
world size 2 against 1, SIGKILL and resume, rank-0-only writes, bf16 autocast, and the
default path unchanged."""

from __future__ import annotations

import os
import time
from pathlib import Path

import ddp_cases
import pytest
import torch

from d2v_pipeline.data2vec import ConfigError, build_pretrain_model, pretrain
from d2v_pipeline.data2vec.checkpoint import CHECKPOINT_FILE, load_checkpoint, previous_path
from d2v_pipeline.data2vec.runtime import DistributedRunError, Runtime, launch
from d2v_pipeline.data2vec.training_utils import optimizer_step

TWO = Runtime(threads=1, nproc_per_node=2)
CASES = list(ddp_cases.CASES)
# 2 processes × B/2 vs 1 process × B after 4 AdamW steps. The two runs add the same terms in
# another order (each rank's partial loss sum, then the all-reduce of the two partial
# gradients; text rows are padded to another length per rank), so they differ by float
# rounding, amplified a little by Adam's normalisation: measured up to 1.1e-6 here on weights
# of size ~0.02-1. A wrong mask, denominator or shard would move them by about the learning
# rate (3e-3) per step; the tolerance sits between, 10x above the measured rounding.
WEIGHT_ATOL, WEIGHT_RTOL = 1e-5, 1e-5
# bf16 keeps 8 mantissa bits (relative rounding 2^-8 ≈ 0.4% per op); the loss is an fp32
# reduction over many tokens of fp32 targets, so the rounding mostly averages out: measured
# relative loss differences up to 7e-4 over 6 steps. 1e-2 flags a bf16 path that diverges.
BF16_LOSS_RTOL = 1e-2
FAILURE_BOUND_S = 120.0  # see test_runtime.py


@pytest.fixture(scope="module")
def one_and_two() -> tuple[dict, dict]:
    """Every case trained by one process (here) and by two (one launch for all cases)."""
    one = ddp_cases.run_cases(CASES)
    two = launch(ddp_cases.run_cases, TWO, CASES)
    return one, two


@pytest.mark.parametrize("case", CASES)
def test_two_processes_match_one_process_and_ranks_agree_bitwise(case, one_and_two) -> None:
    one, two = (runs[case] for runs in one_and_two)
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["state"].keys() == two["state"].keys()
    for name, weight in one["state"].items():
        torch.testing.assert_close(
            two["state"][name], weight, atol=WEIGHT_ATOL, rtol=WEIGHT_RTOL, msg=name
        )
    # the logged loss is the global one (all-reduced), the same up to rounding
    torch.testing.assert_close(two["losses"], one["losses"], atol=0.0, rtol=1e-5)
    # every rank took the same steps: teacher (EMA) and whole model bitwise equal across ranks
    teacher, model = two["hashes"]["teacher"], two["hashes"]["model"]
    assert len(teacher) == 2 and teacher[0] == teacher[1]
    assert model[0] == model[1]
    assert two["teacher_tensors"] == (
        0 if case.startswith("masked_recon") else one["teacher_tensors"]
    )
    assert one["teacher_tensors"] > 0 or case.startswith("masked_recon")


KILL_CASE = "data2vec2-text"
KILL_CFG = {"steps": 6, "log_every": 1, "checkpoint_every": 2}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict, Path]:
    """An uninterrupted 2-process run that checkpoints every 2 steps."""
    ckpt = tmp_path_factory.mktemp("uninterrupted")
    return launch(ddp_cases.run_case, TWO, KILL_CASE, str(ckpt), **KILL_CFG), ckpt


@pytest.mark.parametrize("victim", [1, 0])
def test_sigkill_of_a_rank_fails_fast_and_the_rerun_resumes_bitwise(
    victim, uninterrupted, tmp_path
) -> None:
    reference, _ = uninterrupted
    killer = ddp_cases.KillAt(rank=victim, step=3)  # after the step-2 checkpoint
    start = time.monotonic()
    with pytest.raises(DistributedRunError) as caught:
        launch(ddp_cases.run_case, TWO, KILL_CASE, str(tmp_path), killer, **KILL_CFG)
    assert time.monotonic() - start < FAILURE_BOUND_S
    err = caught.value
    message = str(err)
    assert err.rank == victim and f"rank {victim}" in message and "signal" in message, message
    assert err.exitcode in (-9, None)  # None: the agent saw the other's broken collective first
    assert "resumes from the last checkpoint" in message
    _, meta = load_checkpoint(tmp_path / CHECKPOINT_FILE)
    assert meta["step"] == 2 and meta["world_size"] == 2
    resumed = launch(ddp_cases.run_case, TWO, KILL_CASE, str(tmp_path), **KILL_CFG)
    assert resumed["resumed_from_step"] == 2 and resumed["steps"] == 6
    assert resumed["state"].keys() == reference["state"].keys()
    for name, weight in reference["state"].items():
        assert torch.equal(resumed["state"][name], weight), name
    assert resumed["hashes"] == reference["hashes"]


def test_only_rank_0_writes_whole_checkpoints(uninterrupted) -> None:
    result, ckpt = uninterrupted
    # exactly the newest and the previous checkpoint: no temp, partial or per-rank files
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(
        [CHECKPOINT_FILE, previous_path(CHECKPOINT_FILE).name]
    )
    tensors, meta = load_checkpoint(ckpt / CHECKPOINT_FILE)  # content hash verified
    assert meta["step"] == 6 and meta["world_size"] == 2
    assert all(torch.equal(tensors[f"model.{k}"], v) for k, v in result["state"].items())
    # a second writer would have turned the step-6 file into the "previous" one as well
    _, previous = load_checkpoint(ckpt / previous_path(CHECKPOINT_FILE).name)
    assert previous["step"] == 4


def test_bf16_autocast_on_cpu_stays_close_to_fp32_and_teacher_stays_fp32() -> None:
    bf16 = Runtime(threads=1, precision="bf16")
    for case in ("data2vec-text", "data2vec2-image"):
        fp32_run = ddp_cases.run_case(case, steps=6, log_every=1)
        bf16_run = ddp_cases.run_case(case, steps=6, log_every=1, runtime=bf16)
        assert bf16_run["losses"] != fp32_run["losses"]  # autocast did round something
        torch.testing.assert_close(
            bf16_run["losses"], fp32_run["losses"], atol=0.0, rtol=BF16_LOSS_RTOL
        )
        assert bf16_run["teacher_dtypes"] == ["torch.float32"]
        assert {v.dtype for v in bf16_run["state"].values() if v.is_floating_point()} == {
            torch.float32
        }
    # inside autocast the student computes in bf16, the teacher's targets stay fp32
    method, modality = ddp_cases.CASES["data2vec-text"]
    model = build_pretrain_model(
        method, ddp_cases.encoder_cfg(modality), ddp_cases.method_cfg(method, modality)
    )
    batch = ddp_cases.dataset(modality, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        student = model.head(model.encoder(batch["x"], batch["attention_mask"]).tokens)
        targets = model.compute_targets(batch["x"], batch["attention_mask"])
    assert student.dtype == torch.bfloat16 and targets.dtype == torch.float32


def test_fp16_on_cpu_is_a_config_error() -> None:
    method, modality = ddp_cases.CASES["data2vec2-image"]
    model = build_pretrain_model(
        method, ddp_cases.encoder_cfg(modality), ddp_cases.method_cfg(method, modality)
    )
    with pytest.raises(ConfigError, match="fp16"):
        pretrain(
            model,
            ddp_cases.dataset(modality),
            ddp_cases.train_cfg(),
            progress=False,
            runtime=Runtime(precision="fp16"),
        )


def test_fp16_scaler_step_skips_overflowing_gradients_without_touching_anything() -> None:
    """The optimiser step fp16 training takes (run here with torch's CPU scaler, the only
    part of the fp16 path a CPU can run): an inf gradient is a skipped step (the loop then
    retries the same step, no EMA update, nothing checkpointed), a finite one a real step."""
    param = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([param], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    assert not optimizer_step((param * float("inf")).sum(), opt, [param], 1.0, scaler=scaler)
    assert torch.equal(param.detach(), torch.ones(3)) and not opt.state  # untouched
    assert scaler.get_scale() == 2.0**15  # lowered for the retry
    assert optimizer_step((param * 2.0).sum(), opt, [param], 1.0, scaler=scaler)
    assert bool((param.detach() < 1.0).all())


def test_default_runtime_is_the_plain_single_process_run() -> None:
    case = "data2vec2-image"
    threads = torch.get_num_threads()
    plain = ddp_cases.run_case(case, runtime=None)
    explicit = ddp_cases.run_case(case, runtime=Runtime())
    launched = launch(ddp_cases.run_case, Runtime(nproc_per_node=1), case, runtime=Runtime())
    assert torch.get_num_threads() == threads  # threads None: left as they were
    for other in (explicit, launched):
        assert other["hashes"] == plain["hashes"]
        assert all(torch.equal(other["state"][k], v) for k, v in plain["state"].items())
    assert launched["world_size"] == 1 and not torch.distributed.is_initialized()


def test_compile_keeps_the_parameter_names_and_hands_back_a_plain_model() -> None:
    case = "data2vec2-image"
    method, modality = ddp_cases.CASES[case]
    model = build_pretrain_model(
        method, ddp_cases.encoder_cfg(modality), ddp_cases.method_cfg(method, modality), 11
    )
    names = list(model.state_dict())
    result = pretrain(
        model,
        ddp_cases.dataset(modality),
        ddp_cases.train_cfg(steps=2),
        progress=False,
        runtime=Runtime(threads=1, compile=True),
    )
    assert list(result.model_state) == names  # no "_orig_mod." anywhere
    assert "forward" not in vars(model.encoder.transformer)  # the compiled forward is gone
    eager = ddp_cases.run_case(case, steps=2)
    for name, weight in eager["state"].items():  # compiled kernels round differently
        torch.testing.assert_close(result.model_state[name], weight, atol=1e-5, rtol=1e-5)
    assert os.environ.get("TORCHDYNAMO_DISABLE") != "1"
