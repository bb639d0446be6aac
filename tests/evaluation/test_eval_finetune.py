"""Fine-tuning real tiny encoders: learns, restores the best-validation state, deterministic,
fair budget, layer-wise lr decay, augmentation, bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from d2v_pipeline.data2vec.runtime import Runtime
from d2v_pipeline.evaluation.finetune import (
    Classifier,
    FinetuneConfig,
    build_param_groups,
    encoder_layer_ids,
    finetune,
    lr_at,
    predict_classes,
    shift_and_gain_speech,
    shift_images,
)

# fast settings for tests: no step floor/cap, a larger lr than the default (tiny data)
FAST = {"min_steps": 0, "max_steps": None, "lr": 3e-3, "eval_min_interval_steps": 0}
ONE_THREAD = Runtime(threads=1)  # device/threads/precision live in the Runtime


def _splits(d, n_train=None):
    n = n_train or len(d["train.y"])
    return (
        (d["train.x"][:n], d["train.y"][:n]),
        (d["val.x"], d["val.y"]),
        (d["test.x"], d["test.y"]),
    )


def test_finetune_beats_chance_and_restores_best_val_state(make_encoder, digits):
    enc = make_encoder("image")  # 8x8 digits, patch 2 -> 16 tokens
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    # head_norm="batch": standardised pooled features learn faster at this tiny budget
    cfg = FinetuneConfig(epochs=15, patience=3, head_norm="batch", **FAST)
    res = finetune(enc, 10, *_splits(digits, 400), cfg, progress=False, runtime=ONE_THREAD)
    assert res.test_accuracy > 0.2  # chance is 0.1
    vals = [c["val_acc"] for c in res.curve]
    assert res.best_val_accuracy == max(vals)
    assert res.curve[vals.index(max(vals))]["epoch"] == res.best_epoch
    # the returned weights are the best-val ones, not the last ones
    val_pred = predict_classes(res.model, digits["val.x"], batch_size=100)
    assert np.mean(val_pred == digits["val.y"]) == res.best_val_accuracy
    # this seeded run stops early past its best epoch, so restoring is observable
    assert res.stop_reason == "early_stopping"
    assert vals[-1] < res.best_val_accuracy
    # the caller's encoder is not touched (a copy is trained)
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert set(res.to_dict()) >= {"test_accuracy", "test_macro_f1", "confusion", "curve"}
    assert "model" not in res.to_dict()


def test_same_seed_same_result_other_seed_differs(make_encoder, digits):
    cfg = FinetuneConfig(epochs=2, seed=3, **FAST)
    splits = _splits(digits, 160)
    a = finetune(make_encoder("image"), 10, *splits, cfg, progress=False, runtime=ONE_THREAD)
    b = finetune(make_encoder("image"), 10, *splits, cfg, progress=False, runtime=ONE_THREAD)
    assert a.curve == b.curve
    assert a.test_accuracy == b.test_accuracy and a.confusion == b.confusion
    cfg4 = FinetuneConfig(epochs=2, seed=4, **FAST)
    c = finetune(make_encoder("image"), 10, *splits, cfg4, progress=False, runtime=ONE_THREAD)
    assert [x["train_loss"] for x in c.curve] != [x["train_loss"] for x in a.curve]


def test_text_finetune_with_padding_learns_a_token_rule(make_encoder):
    g = torch.Generator().manual_seed(0)

    def make(n):
        ids = torch.randint(10, 40, (n, 16), generator=g)
        y = torch.randint(0, 2, (n,), generator=g)
        lens = torch.randint(6, 17, (n,), generator=g)
        am = torch.arange(16)[None] < lens[:, None]
        for i in torch.nonzero(y == 1).flatten():  # class 1: token 5 somewhere in the text
            ids[i, torch.randint(0, int(lens[i]), (2,), generator=g)] = 5
        ids[~am] = 0
        return ids, y, am

    test = make(100)
    res = finetune(
        make_encoder("text"),
        2,
        make(160),
        make(100),
        test,
        FinetuneConfig(epochs=8, **FAST),
        progress=False,
        runtime=ONE_THREAD,
    )
    assert res.test_accuracy > 0.8
    # length-grouped, padding-trimmed inference predicts exactly what one untrimmed pass does,
    # row for row
    res.model.eval()
    with torch.no_grad():
        direct = res.model(test[0], attention_mask=test[2]).argmax(-1).numpy()
    trimmed = predict_classes(res.model, test[0], test[2], batch_size=7)
    np.testing.assert_array_equal(trimmed, direct)


def test_speech_finetune_runs_with_augmentation(make_encoder):
    g = torch.Generator().manual_seed(0)
    t = torch.arange(4000) / 16000

    def make(n):  # two tones, noisy, per-clip normalised (spec §4)
        y = torch.randint(0, 2, (n,), generator=g)
        f = torch.where(y == 1, 2000.0, 500.0)
        x = torch.sin(2 * math.pi * f[:, None] * t[None] + torch.rand(n, 1, generator=g) * 6)
        x = x + 0.3 * torch.randn(n, 4000, generator=g)
        return (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True), y

    cfg = FinetuneConfig(epochs=2, batch_size=16, **FAST)
    res = finetune(
        make_encoder("speech"),
        2,
        make(48),
        make(48),
        make(48),
        cfg,
        progress=False,
        runtime=ONE_THREAD,
    )
    assert res.steps == 6 and len(res.curve) == 2
    assert res.test_accuracy > 0.8


def test_speech_finetune_trains_the_conv_front_end(make_encoder):
    """Every parameter set is trained, the conv feature encoder included (docs/protocol.md)."""
    g = torch.Generator().manual_seed(1)
    t = torch.arange(4000) / 16000

    def make(n):
        y = torch.randint(0, 2, (n,), generator=g)
        f = torch.where(y == 1, 2000.0, 500.0)
        x = torch.sin(2 * math.pi * f[:, None] * t[None]) + 0.3 * torch.randn(n, 4000, generator=g)
        return (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True), y

    encoder = make_encoder("speech")
    res = finetune(
        encoder,
        2,
        make(48),
        make(48),
        make(48),
        FinetuneConfig(epochs=2, batch_size=16, **FAST),
        progress=False,
        runtime=ONE_THREAD,
    )
    before = dict(encoder.named_parameters())
    changed = {n for n, p in res.model.encoder.named_parameters() if not torch.equal(p, before[n])}
    frontend = {n for n in before if n.startswith("frontend.")}
    assert frontend and frontend <= changed
    with pytest.raises(ValueError, match=r"FinetuneConfig: unknown key 'freeze_frontend'"):
        FinetuneConfig.from_dict({"freeze_frontend": True})


def test_finetune_returns_the_test_predictions_of_the_restored_weights(make_encoder, digits):
    res = finetune(
        make_encoder("image"), 10, *_splits(digits, 200),
        FinetuneConfig(epochs=3, patience=1, **FAST), progress=False,
        runtime=ONE_THREAD,
    )  # fmt: skip
    pred, true = res.test_predictions, digits["test.y"]
    assert pred.dtype == np.int64 and pred.shape == true.shape
    np.testing.assert_array_equal(pred, predict_classes(res.model, digits["test.x"]))
    assert np.mean(pred == true) == res.test_accuracy
    cm = np.zeros((10, 10), dtype=np.int64)
    np.add.at(cm, (true, pred), 1)
    assert cm.tolist() == res.confusion
    assert "test_predictions" not in res.to_dict()


def test_budget_depends_only_on_subset_size():
    cfg = FinetuneConfig(epochs=100, batch_size=32, min_steps=300, max_steps=3000)
    assert cfg.planned_steps(40) == 300  # 1 % subsets get the step floor
    assert cfg.planned_steps(400) == 100 * 13
    assert cfg.planned_steps(4000) == 3000  # 100 % is capped
    assert FinetuneConfig(epochs=2, min_steps=0, max_steps=None).planned_steps(10) == 2


def test_tiny_subsets_get_the_step_floor_and_sparse_validation(make_encoder, digits):
    # 40 examples, batch 32 -> 2 steps/epoch; the floor lifts 1 epoch to 60 steps and
    # validation runs every 20 steps rather than every 2
    cfg = FinetuneConfig(
        epochs=1, min_steps=60, max_steps=None, patience=None, eval_min_interval_steps=20
    )
    res = finetune(
        make_encoder("image"), 10, *_splits(digits, 40), cfg, progress=False, runtime=ONE_THREAD
    )
    assert res.steps == res.planned_steps == 60
    assert [c["step"] for c in res.curve] == [20, 40, 60]
    assert [c["epoch"] for c in res.curve] == [10, 20, 30]


def test_time_budget_stops_after_the_current_step(make_encoder, digits):
    cfg = FinetuneConfig(epochs=50, time_budget_s=1e-6, **FAST)
    res = finetune(
        make_encoder("image"), 10, *_splits(digits, 40), cfg, progress=True, runtime=ONE_THREAD
    )
    assert res.stop_reason == "time_budget" and res.steps == 1 and len(res.curve) == 1
    assert res.best_step == 1


def test_warmup_then_cosine_schedule():
    lrs = [lr_at(s, 100, 10, 1e-3, 1e-5) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a <= b for a, b in itertools.pairwise(lrs[:10]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] == pytest.approx(1e-5, abs=1e-6)


def test_layer_decay_groups_follow_block_depth(make_encoder):
    enc = make_encoder("image")  # depth 2
    model = Classifier(enc, 10)
    groups = build_param_groups(model, weight_decay=0.05, layer_decay=0.5)
    scale = {n: g["lr_scale"] for g in groups for n in g["names"]}
    wd = {n: g["weight_decay"] for g in groups for n in g["names"]}
    assert scale["encoder.patch_embed.weight"] == 0.5**3  # front-end: deepest decay
    assert scale["encoder.pos_embed"] == 0.5**3
    assert scale["encoder.transformer.blocks.0.qkv.weight"] == 0.5**2
    assert scale["encoder.transformer.blocks.1.fc1.weight"] == 0.5
    assert scale["encoder.transformer.norm.weight"] == 1.0
    assert scale["head.weight"] == 1.0
    assert wd["head.weight"] == 0.05 and wd["head.bias"] == 0.0
    assert wd["encoder.transformer.blocks.0.ln1.weight"] == 0.0  # 1-D: no decay
    assert len(scale) == sum(1 for _ in model.parameters())
    plain = build_param_groups(model, weight_decay=0.05, layer_decay=1.0)
    assert {g["lr_scale"] for g in plain} == {1.0}


def test_layer_ids_for_top_level_blocks_use_registration_order():
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.depth = 2
            self.embed = nn.Linear(4, 4)
            self.blocks = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))
            self.norm = nn.LayerNorm(4)

    ids = encoder_layer_ids(Flat())
    assert ids["embed.weight"] == 0 and ids["blocks.1.bias"] == 2 and ids["norm.weight"] == 3
    bad = Flat()
    bad.depth = 3
    with pytest.raises(ValueError, match="depth is 3 but its parameters name 2 blocks"):
        encoder_layer_ids(bad)


def test_image_shift_moves_content_by_at_most_two_pixels():
    x = torch.zeros(50, 1, 8, 8)
    x[:, 0, 4, 3] = 1.0
    out = shift_images(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    pos = torch.nonzero(out[:, 0] == 1.0)
    assert len(pos) == 50  # the bright pixel survives (crop keeps it inside)
    dy, dx = pos[:, 1] - 4, pos[:, 2] - 3
    assert dy.abs().max() <= 2 and dx.abs().max() <= 2
    assert len({(int(a), int(b)) for a, b in zip(dy, dx, strict=True)}) > 5
    assert torch.equal(shift_images(x, 0, torch.Generator()), x)


def test_speech_shift_is_circular_and_gain_small():
    x = torch.randn(8, 1600, generator=torch.Generator().manual_seed(1))
    out = shift_and_gain_speech(x, 160, 2.0, torch.Generator().manual_seed(0))
    for i in range(8):
        ratio = out[i].abs().sum() / x[i].abs().sum()
        assert 10 ** (-2 / 20) - 1e-4 <= ratio <= 10 ** (2 / 20) + 1e-4
        shifts = [
            s
            for s in range(-160, 161)
            if torch.allclose(torch.roll(x[i], s) * ratio, out[i], atol=1e-4)
        ]
        assert len(shifts) == 1


def test_bad_input_and_config_raise(make_encoder, digits):
    enc = make_encoder("image")
    (xtr, ytr), val, test = _splits(digits, 50)
    cfg = FinetuneConfig(epochs=1, **FAST)
    with pytest.raises(ValueError, match="train has 50 inputs but 49 labels"):
        finetune(enc, 10, (xtr, ytr[:-1]), val, test, cfg, progress=False, runtime=ONE_THREAD)
    bad_y = ytr.copy()
    bad_y[7] = 12
    with pytest.raises(ValueError, match=r"train y\[7\] = 12 is outside"):
        finetune(enc, 10, (xtr, bad_y), val, test, cfg, progress=False, runtime=ONE_THREAD)
    with pytest.raises(ValueError, match=r"FinetuneConfig: unknown key 'learning_rate'"):
        FinetuneConfig.from_dict({"epochs": 3, "learning_rate": 1e-3})
    # Value ranges (pool="max", max_steps < min_steps, ...) are the parameter schema's:
    # tests/test_params_schema.py refuses them at their key path. The library keeps the
    # settings its loop divides by.
    with pytest.raises(ValueError, match=r"FinetuneConfig\.batch_size must be >= 1, got 0"):
        FinetuneConfig(batch_size=0)
