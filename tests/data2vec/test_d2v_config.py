"""Config dataclasses: spec defaults, from_dict validation, the short-run τ rule."""

from __future__ import annotations

import pytest

from d2v_pipeline.data2vec import (
    ConfigError,
    SpeechData2VecConfig,
    SpeechEncoderConfig,
    build_encoder,
    config_to_dict,
    data2vec_config_from_dict,
    encoder_config_from_dict,
    method_config_from_dict,
    train_config_from_dict,
)


def test_defaults_follow_spec_tiny_table() -> None:
    img = build_encoder(encoder_config_from_dict("image", {}))
    assert img.num_tokens() == 16  # 28x28, patch 7
    speech = SpeechEncoderConfig()
    assert speech.num_frames(16000) == 49  # spec §4: 1 s -> 49 frames
    assert speech.receptive_field() == (400, 320)  # 25 ms field, 20 ms stride
    d2v = {m: data2vec_config_from_dict(m, {}) for m in ("image", "speech", "text")}
    assert (d2v["image"].tap, d2v["speech"].tap, d2v["text"].tap) == ("block", "ffn", "ffn")
    assert d2v["speech"].target_layer_norm == "instance"
    assert (d2v["image"].target_layer_norm, d2v["image"].target_final_norm) == ("layer", "layer")
    assert (d2v["speech"].loss_beta, d2v["text"].loss_beta, d2v["image"].loss_beta) == (0, 4, 2)
    assert d2v["text"].head_layers == 2
    assert d2v["speech"].mask.mask_prob == 0.65 and d2v["speech"].mask.mask_length == 10
    assert d2v["text"].mask.mask_prob == 0.15


def test_unknown_key_is_rejected_with_its_name() -> None:
    with pytest.raises(ConfigError, match="'dimm'"):
        encoder_config_from_dict("image", {"dimm": 64})
    with pytest.raises(ConfigError, match="'mask_lenght'"):
        data2vec_config_from_dict("speech", {"mask": {"mask_lenght": 5}})
    with pytest.raises(ConfigError, match="'stepz'"):
        train_config_from_dict({"stepz": 3})


def test_bad_values_name_the_key() -> None:
    with pytest.raises(ConfigError, match="tap"):
        data2vec_config_from_dict("image", {"tap": "attention"})
    with pytest.raises(ConfigError, match="steps"):
        train_config_from_dict({"steps": "many"})
    with pytest.raises(ConfigError, match="heads"):
        encoder_config_from_dict("image", {"dim": 30, "heads": 4})
    with pytest.raises(ConfigError, match="vocab_size"):
        encoder_config_from_dict("text", {"pad_id": 0, "mask_id": 1})
    with pytest.raises(ConfigError, match="modality 'video'"):
        encoder_config_from_dict("video", {})
    with pytest.raises(ConfigError, match="method 'mae'"):
        method_config_from_dict("mae", "image", {})


def test_from_dict_round_trips_and_converts_lists() -> None:
    cfg = encoder_config_from_dict("speech", {"conv_kernels": [10, 3, 3, 3, 3, 2, 2]})
    assert cfg.conv_kernels == (10, 3, 3, 3, 3, 2, 2)
    again = encoder_config_from_dict("speech", config_to_dict(cfg))
    assert again == cfg
    d2v = data2vec_config_from_dict("text", {"mask": {"mask_prob": 0.2}, "top_k": 4})
    assert data2vec_config_from_dict("text", config_to_dict(d2v)) == d2v
    assert train_config_from_dict({"betas": [0.9, 0.95]}).betas == (0.9, 0.95)


def test_short_run_tau_rule_matches_spec_example() -> None:
    # spec §2: T = 2,000 vs 400k: tau_0 0.999 -> 0.9 (clamped), tau_e 0.9999 -> 0.98
    cfg = SpeechData2VecConfig().short_run(2000)
    assert cfg.ema_decay == pytest.approx(0.9)
    assert cfg.ema_end_decay == pytest.approx(0.98)
    assert cfg.ema_anneal_end_step == 150  # tau_n/T kept at 7.5%


def test_the_library_keeps_only_the_checks_its_code_needs() -> None:
    """Ranges are the parameter schema's (tests/test_params_schema.py); a direct caller still
    gets a named error where the code would otherwise build a wrong shape or divide by zero."""
    with pytest.raises(ConfigError, match="image_size 30 not divisible by patch_size 7"):
        encoder_config_from_dict("image", {"image_size": 30})
    with pytest.raises(ConfigError, match="projection_layers must be 1 or 2"):
        method_config_from_dict("data2vec2", "text", {"decoder": {"projection_layers": 3}})
    with pytest.raises(ConfigError, match="clones must be >= 1, got 0"):
        method_config_from_dict("data2vec2", "speech", {"clones": 0})
    with pytest.raises(ConfigError, match="block_size must be >= 1, got 0"):
        method_config_from_dict("data2vec2", "image", {"mask": {"block_size": 0}})
    with pytest.raises(ConfigError, match="log_every must be >= 1, got 0"):
        train_config_from_dict({"log_every": 0})
