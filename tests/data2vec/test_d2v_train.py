"""Training loop: overfitting, collapse monitor, determinism, checkpoints and SIGKILL resume."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from d2v_pipeline.data2vec import (
    CheckpointError,
    ConfigError,
    TrainConfig,
    build_pretrain_model,
    lr_at,
    pack_sequences,
    pretrain,
)
from d2v_pipeline.data2vec.checkpoint import CHECKPOINT_FILE, load_checkpoint
from d2v_pipeline.data2vec.train import random_shift

CASES = [(m, k) for m in ("image", "speech", "text") for k in ("data2vec", "masked_recon")]


def _cfg(**kw) -> TrainConfig:
    base = {
        "steps": 40,
        "batch_size": 16,
        "lr": 3e-3,
        "log_every": 10,
        "checkpoint_every": 0,
        "collapse_grace_steps": 10,
    }
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize(("modality", "method"), CASES)
def test_tiny_model_overfits_a_tiny_batch(modality, method, encoder_cfg, method_cfg, batch) -> None:
    extra = {"ema_decay": 0.999, "ema_end_decay": 0.999} if method == "data2vec" else {}
    model = build_pretrain_model(
        method, encoder_cfg(modality), method_cfg(method, modality, **extra)
    )
    result = pretrain(model, batch(modality, 16), _cfg(steps=60), progress=False)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.9 * losses[0], losses  # measured 0.10-0.82
    assert result.steps == 60 and not result.collapsed
    assert set(result.encoder_state) == set(model.encoder.state_dict())
    row = result.history[-1]
    for key in (
        "step",
        "loss",
        "lr",
        "tau",
        "target_std",
        "pred_std",
        "samples_per_s",
        "elapsed_s",
    ):
        assert key in row
    assert (row["tau"] is None) == (method != "data2vec")


def test_collapse_detector(encoder_cfg, method_cfg, batch, caplog) -> None:
    data = batch("image", 32)
    # deliberately collapsed: zeroed teacher, frozen (tau = 1) -> constant targets
    cfg_d2v = method_cfg("data2vec", "image", ema_decay=1.0, ema_end_decay=1.0)
    model = build_pretrain_model("data2vec", encoder_cfg("image"), cfg_d2v)
    with torch.no_grad():
        for p in model.teacher.parameters():
            p.zero_()
    with caplog.at_level("WARNING"):
        bad = pretrain(model, data, _cfg(steps=30, log_every=5), progress=False)
    assert bad.collapsed and bad.collapse_step == 15  # first check after the grace period
    assert bad.history[-1]["target_std"] < 0.1
    assert "COLLAPSE" in caplog.text
    # healthy run: same data and budget, spec-like teacher
    healthy_cfg = method_cfg("data2vec", "image", ema_decay=0.99, ema_end_decay=0.999)
    good_model = build_pretrain_model("data2vec", encoder_cfg("image"), healthy_cfg)
    good = pretrain(good_model, data, _cfg(steps=30, log_every=5), progress=False)
    assert not good.collapsed and good.collapse_step is None
    assert min(h["target_std"] for h in good.history) > 0.3
    # stop_on_collapse ends the run at the first flagged check
    model2 = build_pretrain_model("data2vec", encoder_cfg("image"), cfg_d2v)
    with torch.no_grad():
        for p in model2.teacher.parameters():
            p.zero_()
    stopped = pretrain(
        model2, data, _cfg(steps=30, log_every=5, stop_on_collapse=True), progress=False
    )
    assert stopped.steps == 15


def test_same_seed_same_losses(encoder_cfg, method_cfg, batch) -> None:
    data = batch("text", 64)
    runs = []
    for seed in (0, 0, 1):
        model = build_pretrain_model(
            "data2vec", encoder_cfg("text", dropout=0.1), method_cfg("data2vec", "text"), seed=seed
        )
        r = pretrain(model, data, _cfg(steps=20, log_every=5, seed=seed), progress=False)
        runs.append([h["loss"] for h in r.history])
    assert all(abs(a - b) <= 1e-6 for a, b in zip(runs[0], runs[1], strict=True))
    assert runs[0] != runs[2]


def test_callback_sees_logged_steps_and_can_stop_training(encoder_cfg, method_cfg, batch) -> None:
    data = batch("image", 64)
    seen: list[int] = []

    def callback(step, model) -> bool:
        seen.append(step)
        assert model.training  # called mid-training
        return step >= 20

    model = build_pretrain_model("data2vec", encoder_cfg("image"), method_cfg("data2vec", "image"))
    r = pretrain(model, data, _cfg(steps=40, log_every=5), progress=False, callback=callback)
    assert seen == [5, 10, 15, 20]
    assert r.steps == 20 and r.info["stopped_early"]


def test_lr_schedule_warmup_then_cosine() -> None:
    cfg = TrainConfig(steps=100, lr=1e-3, min_lr=1e-5, warmup_frac=0.1)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(b <= a for a, b in itertools.pairwise(lrs[10:]))
    assert lrs[-1] == pytest.approx(1e-5, abs=1e-6)


def test_random_shift_is_a_per_image_translation(batch) -> None:
    x = batch("image", 4)["x"]
    g = torch.Generator().manual_seed(0)
    y = random_shift(x, 2, g)
    assert y.shape == x.shape and not torch.equal(x, y)
    assert torch.equal(random_shift(x, 0, g), x)


def test_packing_keeps_every_real_token_in_order_and_drops_only_the_tail(batch) -> None:
    data = batch("text", 32)
    x, am = data["x"], data["attention_mask"]
    packed = pack_sequences(x, am)
    real = [int(t) for row, m in zip(x, am, strict=True) for t in row[m]]
    assert packed.shape[1] == x.shape[1]
    assert packed.shape[0] == len(real) // x.shape[1] and packed.shape[0] > am.all(1).sum()
    assert packed.flatten().tolist() == real[: packed.numel()]  # no padding id left over
    with pytest.raises(ValueError, match="attention_mask must be bool"):
        pack_sequences(x, am.long())
    with pytest.raises(ValueError, match="do not fill one row"):
        pack_sequences(x[:1], am[:1] & (torch.arange(x.shape[1]) < 3))


def test_packed_text_pretrains_and_packing_is_text_only(encoder_cfg, method_cfg, batch) -> None:
    data = batch("text", 64)
    model = build_pretrain_model("data2vec", encoder_cfg("text"), method_cfg("data2vec", "text"))
    r = pretrain(model, data, _cfg(steps=6, log_every=2, pack_sequences=True), progress=False)
    assert r.steps == 6 and all(math.isfinite(h["loss"]) for h in r.history)
    image = build_pretrain_model("data2vec", encoder_cfg("image"), method_cfg("data2vec", "image"))
    with pytest.raises(ConfigError, match="pack_sequences"):
        pretrain(image, batch("image", 64), _cfg(pack_sequences=True), progress=False)


def test_bad_data_is_rejected(encoder_cfg, method_cfg, batch) -> None:
    model = build_pretrain_model("data2vec", encoder_cfg("text"), method_cfg("data2vec", "text"))
    data = batch("text", 16)
    with pytest.raises(ValueError, match="row 3"):
        bad = data["x"].clone()
        bad[3, 2] = 999
        pretrain(model, {**data, "x": bad}, _cfg(), progress=False)
    with pytest.raises(ValueError, match="speaker"):
        pretrain(model, {**data, "speaker": data["x"]}, _cfg(), progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        pretrain(model, data, _cfg(batch_size=64), progress=False)


def test_checkpoint_resume_refuses_a_changed_config(
    tmp_path, encoder_cfg, method_cfg, batch
) -> None:
    data = batch("image", 32)

    def model():
        return build_pretrain_model(
            "data2vec", encoder_cfg("image"), method_cfg("data2vec", "image")
        )

    first = pretrain(model(), data, _cfg(steps=10, checkpoint_every=5), tmp_path, progress=False)
    tensors, meta = load_checkpoint(tmp_path / CHECKPOINT_FILE)
    assert meta["step"] == 10 and any(k.startswith("optim.") for k in tensors)
    # finished run + resume: nothing left to do, identical state
    again = pretrain(model(), data, _cfg(steps=10, checkpoint_every=5), tmp_path, progress=False)
    assert again.resumed_from_step == 10
    assert all(torch.equal(first.model_state[k], v) for k, v in again.model_state.items())
    with pytest.raises(CheckpointError, match=r"train\.lr"):
        pretrain(model(), data, _cfg(steps=10, lr=1e-2), tmp_path, progress=False)
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    # a damaged newest checkpoint is moved aside and the previous one (step 5) is resumed
    recovered = pretrain(model(), data, _cfg(steps=10), tmp_path, progress=False)
    assert recovered.resumed_from_step == 5
    assert (tmp_path / "checkpoint.damaged-1.safetensors").read_bytes() == b"not a checkpoint"


WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits
    from d2v_pipeline.data2vec import (ImageData2VecConfig, ImageEncoderConfig, Runtime,
                                       TrainConfig, build_pretrain_model, pretrain)

    ckpt_dir, out = sys.argv[1], sys.argv[2]
    x = torch.tensor(load_digits().images[:256], dtype=torch.float32).unsqueeze(1)
    x = (x - x.mean()) / x.std()
    enc = ImageEncoderConfig(image_size=8, patch_size=2, dim=32, depth=2, heads=2, ffn_dim=64,
                             dropout=0.1, attention_dropout=0.1)
    model = build_pretrain_model("data2vec", enc, ImageData2VecConfig(ema_decay=0.99,
                                 ema_end_decay=0.999, ema_anneal_end_step=30), seed=7)
    cfg = TrainConfig(steps=100, batch_size=32, lr=2e-3, seed=7, log_every=5,
                      checkpoint_every=5, augment_shift=1)
    r = pretrain(model, {"x": x}, cfg, checkpoint_dir=None if ckpt_dir == "-" else ckpt_dir,
                 progress=False, runtime=Runtime(threads=1))
    save_file(r.model_state, out)
    with open(out + ".json", "w") as f:
        json.dump({"resumed_from_step": r.resumed_from_step,
                   "losses": [h["loss"] for h in r.history]}, f)
    """
)


def _spawn(script: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_sigkill_and_resume_gives_bitwise_identical_weights(tmp_path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    ckpt_dir = tmp_path / "ckpt"
    reference = _spawn(script, "-", str(tmp_path / "ref.safetensors"))
    victim = _spawn(script, str(ckpt_dir), str(tmp_path / "killed.safetensors"))
    ckpt = ckpt_dir / CHECKPOINT_FILE
    deadline = time.monotonic() + 120
    while not ckpt.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert ckpt.exists(), victim.stderr.read().decode()[-3000:]
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert not (tmp_path / "killed.safetensors").exists()  # it really died mid-run
    _, meta = load_checkpoint(ckpt)
    assert 0 < meta["step"] < 100

    resumed = _spawn(script, str(ckpt_dir), str(tmp_path / "resumed.safetensors"))
    for proc in (reference, resumed):
        assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-3000:]
    info = json.loads((tmp_path / "resumed.safetensors.json").read_text())
    ref_info = json.loads((tmp_path / "ref.safetensors.json").read_text())
    assert info["resumed_from_step"] >= meta["step"] > 0
    a = load_file(str(tmp_path / "ref.safetensors"))
    b = load_file(str(tmp_path / "resumed.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("teacher.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert info["losses"] == ref_info["losses"]  # history survives the kill too
