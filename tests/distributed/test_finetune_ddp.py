"""Fine-tuning beyond one CPU process: data parallelism over real gloo worker processes,
bf16 autocast, torch.compile, and the default runtime being the plain single-process run.

The 2-process cases run in ONE launch (``runtime.launch``: torch elastic, spawn, one thread
per process); the worker is a module-level function of this module, which the spawned
processes import by name from the ``sys.path`` they inherit. Every encoder and data set is
rebuilt from seeds, identically in every process. Labels are random: the tests compare runs,
they do not need the classifiers to learn.

Tolerances (each measured here, then given a wide margin):
- 2 processes x B/2 vs 1 process x B, final weights ``WEIGHT_ATOL`` = 1e-5 absolute at
  lr 1e-3 (measured max 9e-7 over all cases, 6-10 AdamW steps). The two runs differ only in
  float reassociation: each rank sums its rows' gradients and the all-reduce adds the
  partial sums, where one process sums all rows at once (~1e-7 relative per gradient).
  Adam normalises every coordinate by its own gradient scale, so coordinates with small
  gradients pass that noise on at up to a sizeable part of lr; 1e-5 is 1 % of one lr-sized
  step. A real error (a wrong row, a per-rank loss normaliser, per-rank BatchNorm
  statistics) moves weights by ~lr per step: such mutations fail this test.
- The mean training loss per evaluation: relative 1e-5 (same argument, no optimiser).
- bf16 vs fp32 (one process): mean training loss within ``BF16_LOSS_ATOL`` = 1e-3 absolute
  (measured 5e-6 over 4 epochs). bf16 keeps 8 significant bits, but the linear layers' bf16
  outputs are small next to the fp32 residual stream and the near-chance logits (~1e-2) are
  rounded by ~4e-5, so the fp32-reduced loss moves little. A loss reduced in bf16 instead
  would be rounded to bf16's spacing near 1.1 (2^-7 = 0.008) and miss the tolerance.
- bf16 features vs fp32 features: ``BF16_FEATURE_RTOL`` = 1e-3 of their largest magnitude
  (measured 3.4e-5; the same residual-stream argument; pooling and layer norms are fp32).
- compile vs eager: 1e-5 on weights, as for world sizes (inductor fuses and reorders sums).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist

# the pretraining cases' tiny sizes; dropout and layerdrop off, since they are seeded per rank
# under DDP (the documented deviation)
from ddp_cases import NO_DROPOUT, TINY
from torch import nn

from d2v_pipeline.data2vec import (
    ImageEncoderConfig,
    SpeechEncoderConfig,
    TextEncoderConfig,
    build_encoder,
)
from d2v_pipeline.data2vec.config_base import ConfigError
from d2v_pipeline.data2vec.runtime import Runtime, dist_info, launch, shard_slice
from d2v_pipeline.evaluation import extract_feature_sets
from d2v_pipeline.evaluation.finetune import (
    Classifier,
    FinetuneConfig,
    GlobalBatchNorm1d,
    finetune,
)

ONE = Runtime(threads=1)
TWO = Runtime(threads=1, nproc_per_node=2, timeout_s=300.0)  # generous: a loaded machine
WEIGHT_ATOL = 1e-5
LOSS_RTOL = 1e-5
BF16_LOSS_ATOL = 1e-3
BF16_FEATURE_RTOL = 1e-3  # of the features' largest magnitude

# case -> (modality, classes, FinetuneConfig overrides). 45 train rows in batches of 9 or 15
# rows: uneven shards (5 + 4 rows; 8 + 7); val 21 and test 19 rows: uneven too.
CASES: dict[str, tuple[str, int, dict[str, Any]]] = {
    # image shift augmentation drawn for the global batch, label smoothing
    "image": ("image", 3, {"batch_size": 10, "label_smoothing": 0.1}),
    # CLS pooling, LayerNorm head
    "image-cls-layernorm": ("image", 3, {"batch_size": 16, "pool": "cls", "head_norm": "layer"}),
    # BatchNorm head: statistics over the global batch (GlobalBatchNorm1d)
    "image-batchnorm": ("image", 3, {"batch_size": 16, "head_norm": "batch"}),
    # padded text (attention masks, trimmed batches), layer-wise lr decay
    "text": ("text", 2, {"batch_size": 10, "layer_decay": 0.7}),
    # speech time shift and gain drawn for the global batch
    "speech": ("speech", 2, {"batch_size": 15}),
}
# Under a BatchNorm head the final LayerNorm's weight and bias only scale and shift each
# pooled feature, which the head's BatchNorm then removes: their true gradient is zero (up to
# BatchNorm's eps), and Adam turns float noise into steps of ~lr in the 1-process run as much
# as in the 2-process run. Those two (and the running statistics that follow them) are noise
# in both runs, so they are left out of the weight comparison of that case only.
NOISE_UNDER_BATCHNORM = (
    "encoder.transformer.norm.weight",
    "encoder.transformer.norm.bias",
    "head_norm.running_mean",
    "head_norm.running_var",
)


def encoder(modality: str) -> nn.Module:
    """A tiny real encoder without dropout: 8x8 images, 0.25 s speech, 16 tokens."""
    torch.manual_seed(0)
    if modality == "image":
        return build_encoder(ImageEncoderConfig(image_size=8, patch_size=2, **TINY, **NO_DROPOUT))
    if modality == "speech":
        speech = {
            "sample_len": 4000,
            "conv_channels": 16,
            "pos_conv_depth": 1,
            "pos_conv_groups": 4,
        }
        return build_encoder(SpeechEncoderConfig(**speech, **TINY, **NO_DROPOUT))
    return build_encoder(
        TextEncoderConfig(vocab_size=40, pad_id=0, mask_id=1, seq_len=16, **TINY, **NO_DROPOUT)
    )


def split(modality: str, n: int, seed: int, classes: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    if modality == "image":
        return torch.randn(n, 1, 8, 8, generator=g), y
    if modality == "speech":
        return torch.randn(n, 4000, generator=g), y
    ids = torch.randint(10, 40, (n, 16), generator=g)
    lengths = torch.randint(4, 17, (n,), generator=g)
    am = torch.arange(16)[None] < lengths[:, None]
    return ids.masked_fill(~am, 0), y, am


def finetune_cfg(**overrides: Any) -> FinetuneConfig:
    base = {
        "epochs": 2,
        "min_steps": 0,
        "max_steps": None,
        "lr": 1e-3,
        "patience": None,
        "eval_min_interval_steps": 0,
    }
    return FinetuneConfig(**{**base, **overrides})


def run_case(
    case: str, runtime: Runtime, sizes: tuple[int, int, int] = (45, 21, 19), **overrides: Any
) -> dict[str, Any]:
    """Fine-tune one case (train/val/test of ``sizes`` rows); what the comparison needs, in
    plain (picklable) values."""
    modality, classes, extra = CASES[case]
    res = finetune(
        encoder(modality),
        classes,
        split(modality, sizes[0], 1, classes),
        split(modality, sizes[1], 2, classes),
        split(modality, sizes[2], 3, classes),
        finetune_cfg(**{**extra, **overrides}),
        progress=False,
        runtime=runtime,
    )
    return {
        "state": {k: v.detach().clone() for k, v in res.model.state_dict().items()},
        "curve": res.curve,
        "preds": res.test_predictions,
        "steps": res.steps,
        "stop_reason": res.stop_reason,
        "model_type": type(res.model),
        "head_norm_type": type(res.model.head_norm),
    }


def state_hash(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def global_batchnorm_check() -> dict[str, float]:
    """Each rank normalises its rows of one 11-row batch with GlobalBatchNorm1d; the output,
    the input gradient (of the sum of every rank's loss) and the running statistics must
    be those of one BatchNorm1d over all 11 rows. Returns the largest deviations."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(11, 6, generator=g) * 3 + 2  # |mean| ~ std: cancellation would show
    w = torch.randn(11, 6, generator=g)
    ref_bn = nn.BatchNorm1d(6, affine=False)
    xr = x.clone().requires_grad_()
    ref = ref_bn(xr)
    (ref * w).sum().backward()
    rows = shard_slice(11)
    bn = GlobalBatchNorm1d(6, affine=False)
    xl = x[rows].clone().requires_grad_()
    out = bn(xl)
    (out * w[rows]).sum().backward()  # this rank's part of the global loss
    return {
        "output": (out - ref[rows]).abs().max().item(),
        "input_grad": (xl.grad - xr.grad[rows]).abs().max().item(),
        "running_mean": (bn.running_mean - ref_bn.running_mean).abs().max().item(),
        "running_var": (bn.running_var - ref_bn.running_var).abs().max().item(),
        "rows": float(xl.shape[0]),
    }


def ddp_worker(cases: list[str], runtime: Runtime) -> dict[str, Any]:
    """Body of each of the 2 workers: every case, every rank's weight hashes, the BatchNorm
    check, and the two error/stop paths that need agreement between ranks."""
    results = {case: run_case(case, runtime) for case in cases}
    hashes = {case: state_hash(r["state"]) for case, r in results.items()}
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, hashes)
    # a spent time budget must stop every rank after the same step (clocks differ)
    timed = run_case("image", runtime, time_budget_s=1e-6)
    # one validation and one test row for 2 ranks: rank 1 predicts nothing, both gather
    one_row = run_case("image", runtime, sizes=(45, 1, 1), epochs=1)
    # a global batch of 1 row cannot be split over 2 processes: a clear error on every rank
    try:
        run_case("image", runtime, batch_size=1, epochs=1)
        too_small = ""
    except ValueError as err:
        too_small = str(err)
    return {
        "results": results,
        "rank_hashes": gathered,
        "batchnorm": global_batchnorm_check(),
        "timed": {k: timed[k] for k in ("steps", "stop_reason")},
        "one_row": {"preds": one_row["preds"], "curve": one_row["curve"]},
        "too_small": too_small,
        "world_size": dist_info().world_size,
    }


@pytest.fixture(scope="module")
def one_and_two() -> tuple[dict[str, Any], dict[str, Any]]:
    one = {case: run_case(case, ONE) for case in CASES}
    two = launch(ddp_worker, TWO, list(CASES), TWO)
    return one, two


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_match_one_process_and_ranks_agree_bitwise(case, one_and_two) -> None:
    one, two = one_and_two
    assert two["world_size"] == 2
    a, b = one[case], two["results"][case]
    # every rank ends with bitwise the same weights (summed gradients, global BatchNorm)
    ranks = [h[case] for h in two["rank_hashes"]]
    assert len(ranks) == 2 and ranks[0] == ranks[1]
    assert a["steps"] == b["steps"] > 0
    assert [c["step"] for c in a["curve"]] == [c["step"] for c in b["curve"]]
    np.testing.assert_allclose(
        [c["train_loss"] for c in b["curve"]], [c["train_loss"] for c in a["curve"]],
        rtol=LOSS_RTOL,
    )  # fmt: skip
    # sharded validation and test predictions, gathered: the same as one process
    assert [c["val_acc"] for c in b["curve"]] == [c["val_acc"] for c in a["curve"]]
    np.testing.assert_array_equal(b["preds"], a["preds"])
    assert a["state"].keys() == b["state"].keys()
    assert b["head_norm_type"] is a["head_norm_type"]  # a plain BatchNorm1d handed back
    skip = NOISE_UNDER_BATCHNORM if CASES[case][2].get("head_norm") == "batch" else ()
    compared = [k for k in a["state"] if k not in skip]
    assert len(compared) > 20
    for name in compared:
        torch.testing.assert_close(
            b["state"][name], a["state"][name], atol=WEIGHT_ATOL, rtol=0, msg=name
        )
    # the weights did move: the comparison is not between two untrained models
    init = Classifier(encoder(CASES[case][0]), CASES[case][1]).state_dict()
    moved = max((a["state"][k] - init[k]).abs().max().item() for k in init if "encoder." in k)
    assert moved > 100 * WEIGHT_ATOL


def test_global_batchnorm_equals_one_batchnorm_over_the_whole_batch(one_and_two) -> None:
    check = one_and_two[1]["batchnorm"]
    assert check["rows"] == 6.0  # rank 0 held 6 of the 11 rows
    for key in ("output", "input_grad", "running_mean", "running_var"):
        assert check[key] < 1e-5, (key, check[key])


def test_time_budget_tiny_splits_and_too_small_batches_agree_across_ranks(one_and_two) -> None:
    two = one_and_two[1]
    assert two["timed"] == {"steps": 1, "stop_reason": "time_budget"}
    reference = run_case("image", ONE, sizes=(45, 1, 1), epochs=1)
    np.testing.assert_array_equal(two["one_row"]["preds"], reference["preds"])
    assert [c["val_acc"] for c in two["one_row"]["curve"]] == [
        c["val_acc"] for c in reference["curve"]
    ]
    assert "FinetuneConfig.batch_size 1" in two["too_small"]
    assert "fewer than the 2 processes" in two["too_small"]


def test_default_runtime_is_the_plain_single_process_run() -> None:
    """runtime=None, Runtime() and launch with nproc_per_node=1 are bitwise one run (the
    comparison with the tree before the runtime existed is in the report of issue 13)."""
    for case in ("image-batchnorm", "text"):
        none = run_case(case, None)
        explicit = run_case(case, Runtime())
        launched = launch(run_case, Runtime(), case, Runtime())
        for other in (explicit, launched):
            assert state_hash(other["state"]) == state_hash(none["state"])
            assert other["curve"] == none["curve"]
            np.testing.assert_array_equal(other["preds"], none["preds"])


def test_bf16_on_cpu_stays_close_to_fp32_with_fp32_weights() -> None:
    seen: list[torch.dtype] = []
    fp32 = run_case("image", ONE, epochs=4)
    enc = encoder("image")
    # finetune trains a deep copy; the hook is copied with its module
    enc.transformer.blocks[0].fc1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    modality, classes, extra = CASES["image"]
    res = finetune(
        enc, classes, split(modality, 45, 1, classes), split(modality, 21, 2, classes),
        split(modality, 19, 3, classes), finetune_cfg(**extra, epochs=4), progress=False,
        runtime=Runtime(threads=1, precision="bf16"),
    )  # fmt: skip
    assert torch.bfloat16 in seen  # autocast ran the linear layers in bf16
    losses = [c["train_loss"] for c in res.curve]
    ref = [c["train_loss"] for c in fp32["curve"]]
    assert len(losses) == len(ref) == 4
    assert losses != ref  # bf16 did round differently
    np.testing.assert_allclose(losses, ref, atol=BF16_LOSS_ATOL, rtol=0)
    assert {p.dtype for p in res.model.parameters()} == {torch.float32}
    assert {b.dtype for b in res.model.buffers()} <= {torch.float32, torch.int64}


def test_bf16_features_are_fp32_cpu_arrays_close_to_fp32() -> None:
    x, _, am = split("text", 19, 3, 2)
    sets = {"final": ("final", None), "top": ("top_k_mean", None)}
    enc = encoder("text")
    ref = extract_feature_sets(enc, x, am, sets=sets, batch_size=7, runtime=ONE)
    bf16 = extract_feature_sets(
        enc, x, am, sets=sets, batch_size=7, runtime=Runtime(threads=1, precision="bf16")
    )
    for name in sets:
        assert bf16[name].dtype == np.float32 and bf16[name].shape == ref[name].shape
        assert not np.array_equal(bf16[name], ref[name])
        scale = np.abs(ref[name]).max()
        np.testing.assert_allclose(bf16[name], ref[name], atol=BF16_FEATURE_RTOL * scale, rtol=0)
    # runtime=None: the encoder's device, fp32 - the same numbers as an explicit default
    none = extract_feature_sets(enc, x, am, sets=sets, batch_size=7)
    for name in sets:
        np.testing.assert_array_equal(none[name], ref[name])


def test_fp16_on_cpu_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"precision 'fp16' needs CUDA"):
        run_case("image", Runtime(precision="fp16"))


def test_compile_matches_eager_and_hands_back_a_plain_classifier() -> None:
    eager = run_case("image-cls-layernorm", ONE, epochs=1)
    compiled = run_case("image-cls-layernorm", Runtime(threads=1, compile=True), epochs=1)
    assert compiled["model_type"] is Classifier  # not torch.compile's wrapper
    assert compiled["state"].keys() == eager["state"].keys()  # no "_orig_mod." prefix
    for name, value in eager["state"].items():
        torch.testing.assert_close(
            compiled["state"][name], value, atol=WEIGHT_ATOL, rtol=0, msg=name
        )
    np.testing.assert_array_equal(compiled["preds"], eager["preds"])
