"""The parameter schema: the shipped conf validates, bad values are named with their file,
library defaults are the schema's defaults, and docs/parameters.md is current."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader

from d2v_pipeline import settings
from d2v_pipeline.data2vec import config as lib
from d2v_pipeline.data2vec.runtime import Runtime as LibraryRuntime
from d2v_pipeline.schema import (
    ParameterError,
    Parameters,
    ParameterSources,
    check_parameters,
    docs,
    find_problems,
)
from d2v_pipeline.schema.pretrain import ImagePretrain, Train
from d2v_pipeline.schema.runtime import Runtime
from d2v_pipeline.schema.tune import Range

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _loader(env: str, runtime: dict | None = None, conf: Path = PROJECT_ROOT / "conf"):
    args = {**settings.CONFIG_LOADER_ARGS, "runtime_params": runtime}
    return OmegaConfigLoader(str(conf), env=env, **args)


def _problems(values: dict) -> dict[str, str]:
    _, problems = find_problems(Parameters, values)
    return {p.path: p.message for p in problems}


@pytest.fixture(scope="module")
def _base() -> dict:
    return _loader("base")["parameters"]


@pytest.fixture
def base_params(_base) -> dict:
    return copy.deepcopy(_base)


@pytest.mark.parametrize("env", ["base", "smoke", "large"])
def test_shipped_environments_validate_clean(env):
    loader = _loader(env)
    params = check_parameters(Parameters, loader["parameters"])
    assert params.image.pretrain.encoder.depth == (2 if env == "smoke" else 4)


def test_every_problem_is_reported_at_once_with_its_path(base_params):
    values = {**base_params, "colour": 1}
    values["image"]["pretrain"]["trian"] = {"steps": 500}
    values["speech"]["pretrain"]["resume"] = "yes"
    values["text"]["ingest"]["label_fractions"] = [0.1, 1.5]
    found = _problems(values)
    assert found == {
        "colour": "unknown key (known: image, report, speech, text)",
        "image.pretrain.trian": "unknown key; did you mean 'train'?",
        "speech.pretrain.resume": "'yes' is not true/false",
        "text.ingest.label_fractions": "1.5 is outside (0, 1]",
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.0, "1.0 is not an integer"),
        (True, "True is not an integer"),
        ("10", "'10' is not an integer"),
        (0, "0 is outside [1, inf]"),
    ],
)
def test_values_are_strict(base_params, value, message):
    base_params["image"]["pretrain"]["train"]["steps"] = value
    assert _problems(base_params) == {"image.pretrain.train.steps": message}


def test_nan_is_refused(base_params):
    base_params["image"]["pretrain"]["train"]["lr"] = float("nan")
    assert _problems(base_params) == {"image.pretrain.train.lr": "nan is not a finite number"}


def test_top_k_deeper_than_the_encoder_is_named(base_params):
    base_params["image"]["pretrain"]["data2vec"]["top_k"] = 5
    base_params["image"]["pretrain"]["data2vec2"]["top_k"] = 6
    assert _problems(base_params) == {
        "image.pretrain.data2vec.top_k": "5 > encoder depth 4",
        "image.pretrain.data2vec2.top_k": "6 > encoder depth 4",
    }


def test_cross_stage_rules(base_params):
    text = base_params["text"]
    text["finetune"]["probe"]["top_k"] = 8
    text["finetune"]["fractions"] = [0.01, 0.5]
    text["finetune"]["finetune_fractions"] = [0.01]
    text["finetune"]["seeds"] = [0, 3]
    text["tune"]["probe"]["label_fraction"] = 0.2
    found = _problems(base_params)
    assert found == {
        "text.finetune.probe.top_k": "8 > encoder depth 4 (pretrain.encoder.depth)",
        "text.finetune.fractions": "[0.5] are not among ingest.label_fractions [0.01, 0.1, 1.0]",
        "text.finetune.seeds": "[3] >= ingest.label_subset_draws 3",
        "text.tune.probe.label_fraction": "0.2 is not among ingest.label_fractions "
        "[0.01, 0.1, 1.0]",
    }


def test_ema_end_below_start_is_named(base_params):
    base_params["speech"]["pretrain"]["data2vec2"]["ema_end_decay"] = 0.9
    assert _problems(base_params) == {
        "speech.pretrain.data2vec2.ema_end_decay": "0.9 < ema_decay 0.99"
    }


# Ranges are declared once, in the schema: these values used to be refused (also) by the
# library dataclasses' own checks, which are gone. Each must still be refused, at its key path.
# (path, bad value, problem)
LIBRARY_RANGES = [
    ("image.pretrain.encoder.depth", 0, "0 is outside [1, inf]"),
    ("image.pretrain.encoder.dim", 0, "0 is outside [1, inf]"),
    ("speech.pretrain.encoder.dropout", 1.0, "1.0 is outside [0, 1)"),
    ("speech.pretrain.encoder.attention_dropout", -0.1, "-0.1 is outside [0, 1)"),
    ("speech.pretrain.encoder.layerdrop", 1.0, "1.0 is outside [0, 1)"),
    ("image.pretrain.data2vec.mask.mask_prob", 1.5, "1.5 is outside [0, 1]"),
    ("text.pretrain.data2vec.mask.mask_prob", -0.1, "-0.1 is outside [0, 1]"),
    ("text.pretrain.data2vec.top_k", 0, "0 is outside [1, inf]"),
    ("text.pretrain.data2vec.head_layers", 0, "0 is outside [1, inf]"),
    ("image.pretrain.data2vec.loss_beta", -1.0, "-1.0 is outside [0, inf]"),
    ("speech.pretrain.data2vec.ema_end_decay", 1.5, "1.5 is outside [0, 1]"),
    ("speech.pretrain.data2vec.ema_anneal_end_step", -1, "-1 is outside [0, inf]"),
    ("image.pretrain.data2vec2.decoder.dim", 0, "0 is outside [1, inf]"),
    ("image.pretrain.data2vec2.decoder.layers", 0, "0 is outside [1, inf]"),
    ("image.pretrain.data2vec2.decoder.groups", 0, "0 is outside [1, inf]"),
    ("speech.pretrain.data2vec2.decoder.input_dropout", 1.0, "1.0 is outside [0, 1)"),
    ("text.pretrain.data2vec2.decoder.groups", 5, "5 does not divide encoder dim 128"),
    ("image.pretrain.data2vec2.top_k", 0, "0 is outside [1, inf]"),
    ("image.pretrain.data2vec2.cls_loss", -0.1, "-0.1 is outside [0, inf]"),
    ("speech.pretrain.data2vec2.mask_noise_std", -0.01, "-0.01 is outside [0, inf]"),
    ("text.pretrain.data2vec2.loss_scale", 0.0, "0.0 is outside (0, inf]"),
    ("speech.pretrain.data2vec2.ema_decay", -0.5, "-0.5 is outside [0, 1]"),
    ("image.pretrain.data2vec2.ema_anneal_end_step", -1, "-1 is outside [0, inf]"),
    ("image.pretrain.data2vec2.mask.mask_prob", 1.0, "1.0 is outside [0, 1)"),
    ("image.pretrain.data2vec2.mask.adjust", -0.1, "-0.1 is outside [0, inf]"),
    ("image.pretrain.train.lr", -0.001, "-0.001 is outside (0, inf]"),
    ("image.pretrain.train.min_lr", -1e-06, "-1e-06 is outside [0, inf]"),
    ("image.pretrain.train.warmup_frac", 1.0, "1.0 is outside [0, 1)"),
    ("image.pretrain.train.checkpoint_every", -1, "-1 is outside [0, inf]"),
    ("image.pretrain.train.augment_shift", -1, "-1 is outside [0, inf]"),
    ("image.finetune.finetune.epochs", 0, "0 is outside [1, inf]"),
    ("speech.finetune.finetune.sample_rate", 0, "0 is outside [1, inf]"),
    ("image.finetune.finetune.lr", 0.0, "0.0 is outside (0, inf]"),
    ("image.finetune.finetune.weight_decay", -0.05, "-0.05 is outside [0, inf]"),
    ("image.finetune.finetune.min_lr", -1e-06, "-1e-06 is outside [0, inf]"),
    ("image.finetune.finetune.grad_clip", -1.0, "-1.0 is outside [0, inf]"),
    ("image.finetune.finetune.head_init_std", -0.01, "-0.01 is outside [0, inf]"),
    ("image.finetune.finetune.layer_decay", 0.0, "0.0 is outside (0, 1]"),
    ("image.finetune.finetune.warmup_fraction", 1.0, "1.0 is outside [0, 1)"),
    ("image.finetune.finetune.label_smoothing", 1.0, "1.0 is outside [0, 1)"),
    ("image.finetune.finetune.beta2", 1.0, "1.0 is outside [0, 1)"),
    ("image.finetune.finetune.eval_min_interval_steps", -1, "-1 is outside [0, inf]"),
    ("image.finetune.finetune.min_steps", -1, "-1 is outside [0, inf]"),
    ("image.finetune.finetune.patience", 0, "0 is outside [1, inf]"),
    ("image.finetune.finetune.time_budget_s", 0.0, "0.0 is outside (0, inf]"),
    # was tests/evaluation/test_eval_finetune.py: FinetuneConfig(pool="max")
    ("image.finetune.finetune.pool", "max", "'max' is not one of 'mean' or 'cls'"),
    (
        "image.finetune.finetune.head_norm",
        "group",
        "'group' is not one of 'none', 'batch' or 'layer'",
    ),
    ("image.finetune.finetune.image_max_shift", -1, "-1 is outside [0, inf]"),
    ("speech.finetune.finetune.speech_gain_db", -2.0, "-2.0 is outside [0, inf]"),
    ("speech.finetune.raw_baseline.sample_rate", 0, "0 is outside [1, inf]"),
    ("speech.finetune.raw_baseline.n_mels", 0, "0 is outside [1, inf]"),
    ("speech.finetune.raw_baseline.win_ms", 0.0, "0.0 is outside (0, inf]"),
    ("speech.finetune.raw_baseline.hop_ms", -10.0, "-10.0 is outside (0, inf]"),
    ("speech.finetune.raw_baseline.log_eps", 0.0, "0.0 is outside (0, inf]"),
    ("text.finetune.raw_baseline.ngram_max", 0, "0 is outside [1, inf]"),
    ("text.finetune.raw_baseline.min_df", 0, "0 is outside [1, inf]"),
    ("speech.finetune.raw_baseline.n_fft", 256, "256 is shorter than the window (400 samples)"),
    # device and threads moved from train / finetune to <m>.runtime (Runtime, one place)
    ("image.runtime.threads", 0, "0 is outside [1, inf]"),
    ("image.runtime.device", "gpu", "'gpu' is not one of 'auto', 'cpu', 'cuda' or 'mps'"),
    ("speech.runtime.precision", "fp8", "'fp8' is not one of 'fp32', 'bf16' or 'fp16'"),
    ("text.runtime.nproc_per_node", 0, "0 is outside [1, inf]"),
    ("text.runtime.workers", -1, "-1 is outside [0, inf]"),
    ("image.runtime.timeout_s", 0.0, "0.0 is outside (0, inf]"),
    ("image.runtime.compile", "yes", "'yes' is not true/false"),
    ("speech.runtime.precision", "fp16", "fp16 needs CUDA (device is 'cpu'); use bf16 on CPU"),
    ("image.pretrain.train.threads", 1, "unknown key; it moved to <m>.runtime.threads "
     "(parameters_runtime.yml)"),
    ("text.finetune.finetune.device", "cuda", "unknown key; it moved to <m>.runtime.device "
     "(parameters_runtime.yml)"),
]  # fmt: skip


def _set(tree: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


@pytest.mark.parametrize(("path", "value", "message"), LIBRARY_RANGES)
def test_ranges_the_library_no_longer_repeats_are_refused_at_their_path(
    base_params, path, value, message
):
    _set(base_params, path, value)
    assert _problems(base_params) == {path: message}


def test_max_steps_below_min_steps_is_named(base_params):
    # was tests/evaluation/test_eval_finetune.py: FinetuneConfig(min_steps=500, max_steps=100)
    _set(base_params, "image.finetune.finetune.min_steps", 500)
    _set(base_params, "image.finetune.finetune.max_steps", 100)
    assert _problems(base_params) == {"image.finetune.finetune.max_steps": "100 < min_steps 500"}


def test_defaults_come_from_the_library():
    train = Train()
    for f in dataclasses.fields(lib.TrainConfig):
        expected = getattr(lib.TrainConfig(), f.name)
        got = getattr(train, f.name)
        assert (list(expected) if isinstance(expected, tuple) else expected) == got, f.name
    assert ImagePretrain().encoder.depth == lib.ImageEncoderConfig().depth
    assert Runtime().model_dump() == dataclasses.asdict(LibraryRuntime())


def test_runtime_rules_and_the_shipped_default(base_params):
    """The shipped runtime is one CPU process in fp32 with 2 threads (the committed results'
    run); MPS with several processes and fp16 off CUDA are refused at their key."""
    for modality in ("image", "speech", "text"):
        assert base_params[modality]["runtime"] == {
            "device": "cpu", "precision": "fp32", "compile": False, "nproc_per_node": 1,
            "workers": 0, "threads": 2, "timeout_s": 120.0,
        }  # fmt: skip
    base_params["image"]["runtime"].update(device="mps", nproc_per_node=2)
    base_params["text"]["runtime"].update(device="cuda", precision="fp16")  # fine: CUDA
    assert _problems(base_params) == {
        "image.runtime.nproc_per_node": "2: MPS runs in one process only"
    }


def test_range_rules():
    _, problems = find_problems(Range, {"low": 0.0, "high": -1.0, "log": True})
    assert {(p.path, p.message) for p in problems} == {
        ("high", "-1.0 < low 0.0"),
        ("low", "0.0: a log range needs low > 0"),
    }


def test_the_file_that_set_a_key_is_named(tmp_path):
    conf = tmp_path / "conf"
    (conf / "base").mkdir(parents=True)
    (conf / "dev").mkdir()
    (conf / "base" / "parameters_pretrain.yml").write_text(
        "image:\n  pretrain:\n    encoder: {depth: 2}\n    data2vec: {top_k: 2}\n"
    )
    (conf / "dev" / "parameters_pretrain.yml").write_text(
        "image:\n  pretrain:\n    data2vec: {top_k: 3}\n"
    )
    runtime = {"image": {"pretrain": {"resume": "no"}}}
    loader = _loader("dev", runtime, conf)
    sources = ParameterSources.from_config_loader(loader, tmp_path)
    assert sources.origin("image.pretrain.data2vec.top_k") == "conf/dev/parameters_pretrain.yml"
    assert sources.origin("image.pretrain.encoder.depth") == "conf/base/parameters_pretrain.yml"
    assert sources.origin("image.pretrain.resume") == "--params"
    assert sources.origin("image.pretrain.train.steps") == "conf/base/parameters_pretrain.yml"


def test_the_whole_tree_names_files_and_full_paths(tmp_path):
    conf = tmp_path / "conf"
    (conf / "base").mkdir(parents=True)
    (conf / "dev").mkdir()
    for source in (PROJECT_ROOT / "conf" / "base").glob("parameters*.yml"):
        (conf / "base" / source.name).write_text(source.read_text())
    (conf / "dev" / "parameters_pretrain.yml").write_text(
        "image:\n  pretrain:\n    encoder: {depth: 2}\n"
    )
    loader = _loader("dev", {"image": {"pretrain": {"foo": 1}}}, conf)
    sources = ParameterSources.from_config_loader(loader, tmp_path)
    with pytest.raises(ParameterError) as err:
        check_parameters(Parameters, loader["parameters"], sources)
    assert err.value.lines == [
        "--params: image.pretrain.foo: unknown key (known: data2vec, data2vec2, encoder, "
        "masked_recon, progress, resume, state_dir, train)"
    ]
    loader = _loader("dev", None, conf)
    with pytest.raises(ParameterError) as err:
        check_parameters(Parameters, loader["parameters"], sources)
    expected = (
        "conf/base/parameters_pretrain.yml: image.pretrain.data2vec.top_k: 4 > encoder depth 2"
    )
    assert expected in err.value.lines


def test_docs_are_generated_from_the_schema():
    assert docs.is_current(), "docs/parameters.md is stale: python -m d2v_pipeline.schema --write"
    text = docs.render()
    for key in ("`top_k`", "`label_fractions`", "`ema_end_decay`", "`confidence`"):
        assert key in text
