"""Teacher targets: layer taps, top-K, normalisation axes, independence of the mask
(spec §8.5-8.7)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from d2v_pipeline.data2vec import build_pretrain_model, top_k_targets


def _model(modality, encoder_cfg, method_cfg, **d2v):
    return build_pretrain_model(
        "data2vec", encoder_cfg(modality), method_cfg("data2vec", modality, **d2v)
    )


def _hooked_taps(model, batch, tap: str) -> list[torch.Tensor]:
    """Per-block tensors seen by forward hooks on the teacher (fc2 output or block output)."""
    seen: list[torch.Tensor] = []
    blocks = model.teacher.model.transformer.blocks
    if tap == "ffn":
        hooks = [b.fc2.register_forward_hook(lambda m, i, o: seen.append(o)) for b in blocks]
    else:
        hooks = [b.register_forward_hook(lambda m, i, o: seen.append(o[0])) for b in blocks]
    try:
        model.compute_targets(batch["x"], batch.get("attention_mask"))
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("modality", ["image", "speech", "text"])
def test_k1_target_is_normalised_last_tap(modality, encoder_cfg, method_cfg, batch) -> None:
    model = _model(modality, encoder_cfg, method_cfg, top_k=1)
    b = batch(modality, 6)
    taps = _hooked_taps(model, b, model.cfg.tap)
    assert len(taps) == model.encoder.depth  # hooks see one tensor per block, no embedding
    last = taps[-1][:, 1:] if modality == "image" else taps[-1]  # CLS excluded
    if modality == "speech":
        expected = F.instance_norm(last.transpose(1, 2).float()).transpose(1, 2)
    else:
        expected = F.layer_norm(last.float(), last.shape[-1:])
    if modality == "image":
        expected = F.layer_norm(expected, expected.shape[-1:])  # DV: LN after averaging
    y = model.compute_targets(b["x"], b.get("attention_mask"))
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)


def test_k_equal_depth_averages_every_block_once(encoder_cfg, method_cfg, batch) -> None:
    model = _model("text", encoder_cfg, method_cfg, top_k=2)
    b = batch("text", 6)
    taps = _hooked_taps(model, b, "ffn")
    expected = sum(F.layer_norm(t, t.shape[-1:]) for t in taps) / len(taps)
    y = model.compute_targets(b["x"], b["attention_mask"])
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    # the embedding output (input of block 0) is not part of the average
    emb = model.teacher.model.embed_norm(
        model.teacher.model.frontend(b["x"]) + model.teacher.model.pos_embed[: b["x"].shape[1]]
    )
    with_emb = (expected * 2 + F.layer_norm(emb, emb.shape[-1:])) / 3
    assert not torch.allclose(y, with_emb, atol=1e-3)


def test_only_the_top_k_layers_are_read() -> None:
    g = torch.Generator().manual_seed(0)
    layers = [torch.randn(2, 5, 8, generator=g) for _ in range(4)]
    poisoned = [torch.full_like(layers[0], float("nan"))] * 2 + layers[2:]
    y = top_k_targets(poisoned, 2, "layer")
    assert torch.isfinite(y).all()  # the first depth-K layers are never touched
    torch.testing.assert_close(y, top_k_targets(layers[2:], 2, "layer"))
    with pytest.raises(ValueError, match="top_k=5"):
        top_k_targets(layers, 5)


@pytest.mark.parametrize("modality", ["image", "speech", "text"])
def test_targets_ignore_the_student_mask(modality, encoder_cfg, method_cfg, batch) -> None:
    model = _model(modality, encoder_cfg, method_cfg)
    b = batch(modality, 8)
    m1 = model.make_mask(b, torch.Generator().manual_seed(1))
    m2 = model.make_mask(b, torch.Generator().manual_seed(2))
    assert not torch.equal(m1.scored, m2.scored)
    s1, y1 = model.forward_parts(b, m1)
    s2, y2 = model.forward_parts(b, m2)
    assert torch.equal(y1, y2)  # spec §8.5: teacher never sees masks
    assert not torch.equal(s1, s2)
    assert not y1.requires_grad and s1.requires_grad
    assert y1.dtype == torch.float32


def _scale_teacher_ffn(model, factor: float = 100.0) -> None:
    """Tiny random blocks have FFN outputs with variance near eps = 1e-5; scale them up so
    the normalised statistics are not dominated by eps."""
    with torch.no_grad():
        for blk in model.teacher.model.transformer.blocks:
            blk.fc2.weight.mul_(factor)


def test_normalisation_axes(encoder_cfg, method_cfg, batch) -> None:
    # speech, K=1: per (sample, channel) mean 0 / var 1 over time (instance norm)
    model = _model("speech", encoder_cfg, method_cfg, top_k=1)
    _scale_teacher_ffn(model)
    y = model.compute_targets(batch("speech", 4)["x"])
    zeros, ones = torch.zeros_like(y.mean(1)), torch.ones_like(y.mean(1))
    torch.testing.assert_close(y.mean(1), zeros, atol=1e-4, rtol=0)
    torch.testing.assert_close(y.var(1, unbiased=False), ones, atol=5e-3, rtol=0)
    assert y.var(2).std() > 0.05  # ... and not normalised over channels
    # text, K=1 / images (final LN): per token mean 0 / var 1 over channels
    for modality in ("text", "image"):
        model = _model(modality, encoder_cfg, method_cfg, top_k=1)
        _scale_teacher_ffn(model)
        b = batch(modality, 4)
        y = model.compute_targets(b["x"], b.get("attention_mask"))
        zeros, ones = torch.zeros_like(y[..., 0]), torch.ones_like(y[..., 0])
        torch.testing.assert_close(y.mean(-1), zeros, atol=1e-4, rtol=0)
        torch.testing.assert_close(y.var(-1, unbiased=False), ones, atol=5e-3, rtol=0)
        assert y.var(1).std() > 0.05  # ... and not over tokens
