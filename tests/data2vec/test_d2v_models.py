"""Encoder contract, masked-only loss (spec §8.4), shapes (§8.10), baseline model, loading."""

from __future__ import annotations

import pytest
import torch

from d2v_pipeline.data2vec import (
    ImageData2VecConfig,
    SpeechEncoderConfig,
    build_encoder,
    build_pretrain_model,
    load_encoder,
    model_flops_per_step,
)

MODALITIES = ["image", "speech", "text"]


@pytest.mark.parametrize("modality", MODALITIES)
def test_encoder_contract(modality, encoder_cfg, batch) -> None:
    cfg = encoder_cfg(modality)
    enc = build_encoder(cfg).eval()
    b = batch(modality, 3)
    out = enc(b["x"], attention_mask=b.get("attention_mask"), return_layers=True)
    t = enc.num_tokens(b["x"].shape[-1] if modality == "speech" else b["x"].shape[1])
    if modality == "image":
        t = 16
    assert out.tokens.shape == (3, t, cfg.dim)
    assert len(out.layers) == cfg.depth and all(a.shape == (3, t, cfg.dim) for a in out.layers)
    assert (out.cls is not None) == (modality == "image")
    if modality == "text":
        assert torch.equal(out.padding_mask, ~b["attention_mask"])
    else:
        assert out.padding_mask is None
    assert enc(b["x"], attention_mask=b.get("attention_mask")).layers is None


def test_one_second_of_speech_gives_49_frames() -> None:
    enc = build_encoder(SpeechEncoderConfig()).eval()
    out = enc(torch.randn(2, 16000), return_layers=True)
    assert out.tokens.shape == (2, 49, 128) and len(out.layers) == 4


def test_text_padding_does_not_leak_into_real_tokens(encoder_cfg, batch) -> None:
    enc = build_encoder(encoder_cfg("text")).eval()
    b = batch("text", 4)
    other = b["x"].masked_fill(~b["attention_mask"], 7)  # different ids at padded positions
    a = enc(b["x"], b["attention_mask"]).tokens
    c = enc(other, b["attention_mask"]).tokens
    am = b["attention_mask"]
    torch.testing.assert_close(a[am], c[am], atol=1e-6, rtol=0)


@pytest.mark.parametrize("modality", MODALITIES)
def test_loss_uses_masked_positions_only(modality, encoder_cfg, method_cfg, batch) -> None:
    model = build_pretrain_model(
        "data2vec", encoder_cfg(modality), method_cfg("data2vec", modality)
    )
    b = batch(modality, 8)
    masked = model.make_mask(b, torch.Generator().manual_seed(0))
    student, targets = model.forward_parts(b, masked)
    s = student.detach().requires_grad_(True)
    loss, _ = model.loss_from_outputs(s, targets, masked.scored)
    loss.backward()
    unscored = ~masked.scored
    if modality == "text":  # padding is never scored
        assert not (masked.scored & ~b["attention_mask"]).any()
    assert unscored.any() and masked.scored.any()
    assert s.grad[unscored].abs().max() == 0  # spec §8.4: no gradient at unmasked positions
    assert s.grad[masked.scored].abs().max() > 0
    noisy = s.detach() + 5.0 * torch.randn_like(s) * unscored.unsqueeze(-1)
    loss2, _ = model.loss_from_outputs(noisy, targets, masked.scored)
    assert torch.equal(loss.detach(), loss2.detach())
    pred = model.head(s[masked.scored])
    assert pred.shape == targets[masked.scored].shape == (int(masked.scored.sum()), s.shape[-1])


@pytest.mark.parametrize("modality", ["image", "text"])
def test_masked_input_does_not_reach_the_student(modality, encoder_cfg, batch) -> None:
    enc = build_encoder(encoder_cfg(modality)).eval()
    b = batch(modality, 4)
    x = b["x"]
    mask = torch.zeros(4, enc.num_tokens(x.shape[1]), dtype=torch.bool)
    mask[:, [1, 5]] = True
    x2 = x.clone()
    if modality == "image":  # change every pixel of patch 5 (row 1, col 1 of the 4x4 grid)
        x2[:, :, 2:4, 2:4] += 3.0
    else:
        x2[:, 5] = 9
    am = b.get("attention_mask")
    a = enc(x, am, mask=mask).tokens
    c = enc(x2, am, mask=mask).tokens
    assert torch.equal(a, c)  # v1: replaced by the mask embedding before the transformer
    assert not torch.equal(a, enc(x2, am).tokens)


@pytest.mark.parametrize("modality", MODALITIES)
def test_masked_reconstruction_baseline_runs(modality, encoder_cfg, method_cfg, batch) -> None:
    model = build_pretrain_model(
        "masked_recon", encoder_cfg(modality), method_cfg("masked_recon", modality)
    )
    b = batch(modality, 8)
    loss, stats = model.training_loss(b, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert not hasattr(model, "teacher")
    if modality != "text":
        t = model.reconstruction_targets(b["x"])
        assert t.shape[1] == model.encoder.num_tokens(
            b["x"].shape[-1] if modality == "speech" else 8
        )
        torch.testing.assert_close(t.mean(-1), torch.zeros_like(t[..., 0]), atol=1e-5, rtol=0)
    else:
        assert 0.0 <= stats["accuracy"] <= 1.0


def test_load_encoder_round_trip(encoder_cfg, method_cfg, batch) -> None:
    cfg = encoder_cfg("image")
    model = build_pretrain_model("data2vec", cfg, method_cfg("data2vec", "image"), seed=3)
    state = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    enc = load_encoder(cfg, state).eval()
    x = batch("image", 2)["x"]
    assert torch.equal(enc(x).tokens, model.encoder.eval()(x).tokens)
    with pytest.raises(KeyError, match="unexpected"):
        load_encoder(cfg, {**state, "bogus": torch.zeros(1)})
    again = build_pretrain_model("data2vec", cfg, method_cfg("data2vec", "image"), seed=3)
    assert all(torch.equal(state[k], v) for k, v in again.encoder.state_dict().items())


def test_flops_estimate_scales_with_batch(encoder_cfg) -> None:
    model = build_pretrain_model("data2vec", encoder_cfg("image"), ImageData2VecConfig(top_k=2))
    f1, f2 = model_flops_per_step(model, 1), model_flops_per_step(model, 8)
    assert f1 > 0 and f2 == pytest.approx(8 * f1, rel=1e-6)
    n = sum(p.numel() for n_, p in model.encoder.transformer.named_parameters() if "weight" in n_)
    # nanoGPT rule of thumb: ~ (3 student + 1 teacher) x 2 x params x tokens, plus attention
    assert f1 > 8 * n * 17 * 0.8


def test_wrong_inputs_raise_clear_errors(encoder_cfg, method_cfg) -> None:
    enc = build_encoder(encoder_cfg("image"))
    with pytest.raises(ValueError, match="expects"):
        enc(torch.randn(2, 1, 28, 28))
    with pytest.raises(ValueError, match="top_k=9"):
        build_pretrain_model(
            "data2vec", encoder_cfg("image"), method_cfg("data2vec", "image", top_k=9)
        )
    with pytest.raises(ValueError, match="speech"):
        build_pretrain_model("data2vec", encoder_cfg("image"), method_cfg("data2vec", "speech"))
