"""EMA teacher (spec §8.1-8.3): frozen, exact update, copied vs averaged parts, schedule."""

from __future__ import annotations

import itertools

import pytest
import torch

from d2v_pipeline.data2vec import TrainConfig, build_pretrain_model, ema_decay_at
from d2v_pipeline.data2vec.train import build_optimizer

MODALITIES = ["image", "speech", "text"]


def _model(modality, encoder_cfg, method_cfg, **d2v):
    return build_pretrain_model(
        "data2vec", encoder_cfg(modality), method_cfg("data2vec", modality, **d2v)
    )


@pytest.mark.parametrize("modality", MODALITIES)
def test_teacher_is_frozen_and_outside_the_optimiser(
    modality, encoder_cfg, method_cfg, batch
) -> None:
    model = _model(modality, encoder_cfg, method_cfg)
    model.train()
    teacher = list(model.teacher.parameters())
    assert teacher and all(not p.requires_grad for p in teacher)
    assert not model.teacher.training and not any(m.training for m in model.teacher.modules())
    loss, _ = model.training_loss(batch(modality, 8), torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is None for p in teacher)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    opt = build_optimizer(model, TrainConfig())
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not in_opt & {id(p) for p in teacher}
    assert {id(p) for p in model.encoder.parameters()} <= in_opt


@pytest.mark.parametrize("modality", MODALITIES)
def test_ema_update_is_exact(modality, encoder_cfg, method_cfg) -> None:
    model = _model(
        modality, encoder_cfg, method_cfg, ema_decay=0.9, ema_end_decay=0.99, ema_anneal_end_step=10
    )
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # stand-in for an optimiser step: move every student weight
        for p in model.encoder.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    student = {n: p.detach().clone() for n, p in model.encoder.named_parameters()}
    old = {n: p.detach().clone() for n, p in model.teacher.model.named_parameters()}
    step = 4
    tau = model.ema_decay_at(step)
    assert tau == pytest.approx(0.9 + 0.09 * 0.4)
    model.after_optimizer_step(step)
    copied = set(model.teacher.copied_names())
    averaged = set(model.teacher.averaged_names())
    assert averaged and copied.isdisjoint(averaged) and copied | averaged == set(old)
    for name, t in model.teacher.model.named_parameters():
        if name in copied:
            assert torch.equal(t, student[name]), name
        else:
            expected = tau * old[name] + (1 - tau) * student[name]
            torch.testing.assert_close(t, expected, atol=1e-7, rtol=0)
    # spec §2: which parts are copied / shared / averaged per modality
    if modality == "speech":
        assert copied and all(n.startswith("pos_conv.") for n in copied)
        assert not any(n.startswith("frontend.") for n in old)  # CNN shared, not in teacher
    elif modality == "text":
        assert {"frontend.weight", "pos_embed", "embed_norm.weight"} <= copied
        assert not any(n.startswith("transformer.") for n in copied)
    else:
        assert not copied and "patch_embed.weight" in averaged  # DV: whole model averaged
    assert "mask_emb" not in old  # the teacher never sees masks


def test_tau_one_leaves_the_teacher_unchanged(encoder_cfg, method_cfg) -> None:
    model = _model("text", encoder_cfg, method_cfg, ema_decay=1.0, ema_end_decay=1.0)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    before = {n: t.clone() for n, t in model.teacher.state_dict().items()}
    model.after_optimizer_step(0)
    assert all(torch.equal(before[n], t) for n, t in model.teacher.state_dict().items())


def test_tau_schedule() -> None:
    tau0, tau_e, n = 0.999, 0.9999, 1000
    assert ema_decay_at(0, tau0, tau_e, n) == tau0
    assert ema_decay_at(n // 2, tau0, tau_e, n) == pytest.approx((tau0 + tau_e) / 2)
    assert ema_decay_at(n, tau0, tau_e, n) == tau_e
    assert ema_decay_at(10 * n, tau0, tau_e, n) == tau_e
    taus = [ema_decay_at(s, tau0, tau_e, n) for s in range(0, 2 * n, 7)]
    assert all(b >= a for a, b in itertools.pairwise(taus))
    assert ema_decay_at(5, 0.9998, 0.9998, 0) == 0.9998  # constant (images v1)
