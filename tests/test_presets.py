"""Paper-size presets (``conf/gpu``): the environment validates, each preset builds the way
the pretrain node builds it, has its published parameter count (within a few %), and trains
one step on CPU; and the cost estimates behind the README table add up.

The paper-size steps are deliberately tiny (batch 1, one second of audio, 32 tokens of
text) but use the preset models and runtime unchanged (bf16 autocast on CPU here, since
``device: auto`` finds no GPU).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from kedro.config import OmegaConfigLoader

from d2v_pipeline import settings
from d2v_pipeline.data2vec import presets
from d2v_pipeline.data2vec.config import ImageEncoderConfig, default_method_config
from d2v_pipeline.data2vec.models import build_pretrain_model
from d2v_pipeline.data2vec.train import pretrain
from d2v_pipeline.hooks import ParameterHooks
from d2v_pipeline.pipelines.pretrain.nodes import plan_pretraining
from d2v_pipeline.sources.text import SPECIAL_TOKENS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODALITIES = ("image", "speech", "text")
METHODS = ("data2vec", "data2vec2", "masked_recon")
# The image folder of conf/gpu holds 224x224 pictures (the readers never resize): ViT-B/16's
# input. Ingest records it from the data; here it is the preset's stated input.
IMAGE_SIZE = 224
TOLERANCE = 0.03  # "within a few %" of the published size


def _loader(env: str = "gpu") -> OmegaConfigLoader:
    """The config loader ``kedro run --env gpu`` uses (the project's settings)."""
    return OmegaConfigLoader(str(PROJECT_ROOT / "conf"), env=env, **settings.CONFIG_LOADER_ARGS)


@pytest.fixture(scope="module")
def gpu_params() -> dict:
    return _loader()["parameters"]


def dataset_info(modality: str, params: dict) -> dict:
    """What ingest would record in ``<m>.dataset_info`` for the preset's input, from the gpu
    environment's ingest parameters (ingest/nodes.py ``_info`` and the build_* nodes)."""
    ingest = params[modality]["ingest"]
    if modality == "image":
        return {"modality": "image", "input_shape": [3, IMAGE_SIZE, IMAGE_SIZE]}
    if modality == "speech":
        rate = ingest["sample_rate"]
        return {
            "modality": "speech",
            "input_shape": [round(rate * ingest["clip_seconds"])],
            "sample_rate": rate,
        }
    special = {f"{t.strip('<>')}_id": i for i, t in enumerate(SPECIAL_TOKENS)}
    return {
        "modality": "text",
        "vocab_size": ingest["tokenizer"]["vocab_size"],
        "seq_len": ingest["seq_len"],
        **special,
    }


def tiny_data(modality: str, info: dict) -> dict[str, torch.Tensor]:
    """Two rows of the preset's input (text: 32 real tokens, shorter than its 512)."""
    g = torch.Generator().manual_seed(0)
    if modality == "image":
        return {"x": torch.randn(2, *info["input_shape"], generator=g)}
    if modality == "speech":
        return {"x": torch.randn(2, *info["input_shape"], generator=g)}
    ids = torch.randint(len(SPECIAL_TOKENS), info["vocab_size"], (2, 32), generator=g)
    return {"x": ids, "attention_mask": torch.ones(2, 32, dtype=torch.bool)}


def test_gpu_environment_passes_the_run_time_parameter_check():
    """The hook ``kedro run --env gpu`` runs before anything else accepts the environment,
    and the environment writes under its own data root (never over the base results)."""
    loader = _loader()
    ParameterHooks().after_context_created(
        SimpleNamespace(config_loader=loader, project_path=PROJECT_ROOT)
    )
    params = loader["parameters"]
    root = loader["globals"]["data_root"]
    assert root == "data/gpu"
    for modality in MODALITIES:
        assert params[modality]["pretrain"]["state_dir"].startswith(f"{root}/")
        runtime = params[modality]["runtime"]
        assert (runtime["device"], runtime["precision"]) == ("auto", "bf16")


@pytest.mark.parametrize("modality", MODALITIES)
def test_every_method_of_a_preset_trains_the_same_encoder(gpu_params, modality):
    """The fair-comparison rule holds for the presets too: one encoder config per modality
    (masked_recon's step is left out below: it trains that same encoder, with a head)."""
    info, params = dataset_info(modality, gpu_params), gpu_params[modality]
    plans = [plan_pretraining(m, info, params["pretrain"], params["runtime"]) for m in METHODS]
    assert all(p.encoder == plans[0].encoder for p in plans)


@pytest.mark.parametrize("method", ["data2vec", "data2vec2"])
@pytest.mark.parametrize("modality", MODALITIES)
def test_preset_has_the_published_size_and_trains_one_step(gpu_params, modality, method):
    info = dataset_info(modality, gpu_params)
    plan = plan_pretraining(
        method, info, gpu_params[modality]["pretrain"], gpu_params[modality]["runtime"]
    )
    model = build_pretrain_model(method, plan.encoder, plan.method_config, seed=plan.train.seed)

    # Base shapes (spec §4): 12 blocks of width 768, 12 heads, FFN 3072
    enc = plan.encoder
    assert (enc.dim, enc.depth, enc.heads, enc.ffn_dim) == (768, 12, 12, 3072)
    # tokens: 224 / 16 = 14 x 14 patches; 1 s at 16 kHz = 49 frames; 512 text positions
    input_len = info["input_shape"][-1] if modality == "speech" else None
    tokens = {"image": 14 * 14, "speech": 49, "text": 512}[modality]
    assert model.encoder.num_tokens(input_len) == tokens
    n = presets.count_parameters(model.encoder)
    published = presets.PUBLISHED_PARAMS[modality]
    assert abs(n / published - 1) < TOLERANCE, f"{modality}: {n:,} vs {published:,}"

    # one step, the library call the node makes, on the preset's runtime (CPU bf16 here)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    train = dataclasses.replace(plan.train, steps=1, batch_size=1, log_every=1)
    result = pretrain(model, tiny_data(modality, info), train, progress=False, runtime=plan.runtime)
    row = result.history[-1]
    assert result.steps == 1 and math.isfinite(row["loss"]) and row["lr"] > 0
    assert row["target_std"] > 0  # targets that vary (spec §9: a constant one is collapse)
    after = result.encoder_state
    assert any(not torch.equal(before[k], after[k]) for k in before), "no weight moved"
    assert result.num_params == n


def _tiny_image_model(depth: int) -> torch.nn.Module:
    enc = ImageEncoderConfig(dim=32, depth=depth, heads=2, ffn_dim=64)  # 28 px, 4x4 patches
    return build_pretrain_model("data2vec", enc, default_method_config("data2vec", "image"))


def test_saved_activation_bytes_counts_what_autograd_keeps():
    x = torch.randn(5, 8, requires_grad=True)
    # x*3 saves nothing (a constant factor); pow(2) saves its input, 5 x 8 fp32 = 160 bytes
    assert presets.saved_activation_bytes(lambda: (x * 3).pow(2).sum()) == 5 * 8 * 4
    # a parameter's own storage is not an activation
    assert presets.saved_activation_bytes(lambda: (x * x).sum(), exclude=[x]) == 0


def test_one_more_block_costs_the_block_formula_per_token():
    """Activation accounting: an extra student block adds BLOCK_BYTES_PER_TOKEN x D bytes for
    each of its T + 1 tokens (CLS) per sample, and its bf16 weight copy once per step."""

    def batch(n: int) -> dict[str, torch.Tensor]:
        return {"x": torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))}

    (s2, f2), (s3, f3) = (presets.activation_bytes(_tiny_image_model(d), batch) for d in (2, 3))
    tokens = 4 * 4 + 1
    assert s3 - s2 == presets.BLOCK_BYTES_PER_TOKEN * 32 * tokens
    block_params = presets.count_parameters(_tiny_image_model(3).encoder.transformer.blocks[0])
    assert f3 - f2 == 2 * block_params  # bf16


def test_step_estimate_adds_up():
    model = _tiny_image_model(2)
    one = presets.estimate_step(model, 1, per_sample_bytes=1000, per_step_bytes=500)
    ten = presets.estimate_step(model, 10, per_sample_bytes=1000, per_step_bytes=500)
    taps = presets.teacher_tap_bytes(model)
    assert taps == 2 * 2 * 16 * 32 * 4  # default image top_k 2, 16 tokens, D 32, fp32
    assert ten.memory_bytes - one.memory_bytes == 9 * (1000 + taps)
    state = 16 * one.trainable_params + 4 * one.teacher_params
    assert one.memory_bytes == state + 500 + 1000 + taps
    assert ten.flops_per_step == model.flops_per_step(10)
    assert ten.seconds_per_step == pytest.approx(ten.flops_per_step / (312e12 * 0.4))
    table = presets.markdown_table([("image", "data2vec", 100, one)])
    assert "| ViT-B/16 | data2vec |" in table and "(100)" in table
