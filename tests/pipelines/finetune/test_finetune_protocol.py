"""The evaluation protocol's fairness rules, on the real conf: every arm fine-tunes the same
parameter set (front-end included), and the shared settings are the same in every modality
(docs/protocol.md)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from d2v_pipeline.data2vec import (
    Runtime,
    SpeechEncoderConfig,
    TrainConfig,
    build_encoder,
    build_pretrain_model,
    load_encoder,
    method_config_from_dict,
    pretrain,
)
from d2v_pipeline.evaluation import FinetuneConfig, finetune

PROJECT_ROOT = Path(__file__).resolve().parents[3]
MODALITIES = ("image", "speech", "text")
TINY_SPEECH = SpeechEncoderConfig(
    dim=32, depth=2, heads=2, ffn_dim=64, sample_len=4000, conv_channels=16,
    pos_conv_depth=1, pos_conv_kernel=5, pos_conv_groups=4,
)  # fmt: skip


def _conf(env: str, name: str) -> dict:
    path = PROJECT_ROOT / "conf" / env / f"parameters_{name}.yml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def _merge(base: dict, over: dict) -> dict:
    """Soft merge, as settings.py configures Kedro's loader for parameters."""
    out = dict(base)
    for key, value in over.items():
        is_dict = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if is_dict else value
    return out


def _finetune_block(modality: str, env: str = "base") -> dict:
    conf = _conf("base", "finetune")
    if env != "base":
        conf = _merge(conf, _conf(env, "finetune"))
    return conf[modality]["finetune"]["finetune"]


def _tones(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two noisy tones, per-clip normalised (spec §4), 0.25 s at 16 kHz."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(4000) / 16000
    y = torch.randint(0, 2, (n,), generator=g)
    f = torch.where(y == 1, 2000.0, 500.0)
    x = torch.sin(2 * math.pi * f[:, None] * t[None]) + 0.3 * torch.randn(n, 4000, generator=g)
    return (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True), y


@pytest.mark.parametrize("env", ["base", "smoke", "large"])
def test_every_modality_shares_one_finetuning_rule(env):
    """Every conf env parses into FinetuneConfig (no front-end freezing key survives), and
    the shared settings (lr, head) are one value for every modality."""
    cfgs = {m: FinetuneConfig.from_dict(_finetune_block(m, env)) for m in MODALITIES}
    assert len({c.lr for c in cfgs.values()}) == 1
    assert {c.head_norm for c in cfgs.values()} == {"none"}


def test_scratch_and_pretrained_arms_both_train_their_front_end():
    """Fine-tuned with conf/base's speech settings (budget shrunk), the random-init arm and a
    pretrained arm change the same parameters, the conv front-end included."""
    torch.manual_seed(0)
    scratch = build_encoder(TINY_SPEECH)
    model = build_pretrain_model(
        "data2vec",
        TINY_SPEECH,
        method_config_from_dict(
            "data2vec", "speech", {"top_k": 2, "mask": {"mask_prob": 0.65, "mask_length": 3}}
        ),
    )
    one_thread = Runtime(threads=1)
    steps = TrainConfig(steps=4, batch_size=8, lr=3e-3, log_every=4, checkpoint_every=0)
    state = pretrain(
        model, {"x": _tones(32, 0)[0]}, steps, progress=False, runtime=one_thread
    ).encoder_state
    pretrained = load_encoder(TINY_SPEECH, state)

    budget = {"epochs": 2, "min_steps": 0, "max_steps": 6, "batch_size": 8}
    cfg = FinetuneConfig.from_dict({**_finetune_block("speech"), **budget})
    data = [_tones(32, s) for s in (1, 2, 3)]
    changed = {}
    for arm, encoder in (("scratch", scratch), ("data2vec", pretrained)):
        before = {n: p.detach().clone() for n, p in encoder.named_parameters()}
        tuned = finetune(encoder, 2, *data, cfg, progress=False, runtime=one_thread).model.encoder
        changed[arm] = {n for n, p in tuned.named_parameters() if not torch.equal(p, before[n])}
        frontend = {n for n in before if n.startswith("frontend.")}
        assert frontend and frontend <= changed[arm], arm
    assert changed["scratch"] == changed["data2vec"]
    assert not torch.equal(
        scratch.frontend["proj"].weight, pretrained.frontend["proj"].weight
    )  # the two arms really start from different front-ends
