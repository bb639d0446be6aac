"""Ingest nodes on real data: parameter validation, splits, label subsets, model inputs."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tokenizers import Tokenizer

from d2v_pipeline.io import tensors_sha256
from d2v_pipeline.pipelines.ingest import nodes
from d2v_pipeline.pipelines.ingest.nodes import IngestParameterError

SPLITS = ("train", "val", "test")
PROJECT_ROOT = Path(__file__).resolve().parents[3]


def _image_lane(params):
    data = nodes.load_image_source(params)
    splits = nodes.split_dataset(data, params)
    model_input, info = nodes.build_image_input(data, splits, params)
    subsets = nodes.make_label_subsets(data, splits, params)
    return data, splits, model_input, info, subsets


@pytest.fixture(scope="module")
def image_run(base_ingest_conf):
    params = {**base_ingest_conf["image"]["ingest"], "max_examples": 600}
    return (params, *_image_lane(params))


@pytest.fixture(scope="module")
def speech_run(base_ingest_conf, tmp_path_factory):
    params = dict(base_ingest_conf["speech"]["ingest"])
    params["espeak"] = {
        **params["espeak"],
        "cache_dir": str(tmp_path_factory.mktemp("speech_cache")),
        "progress": False,
        "words": ["yes", "no", "left", "right"],
        "accents": ["en-us", "en"],
        "variants": ["m1", "m3", "f1", "f4", "klatt"],
    }
    data = nodes.load_speech_source(params)
    splits = nodes.split_dataset(data, params)
    model_input, info = nodes.build_speech_input(data, splits, params)
    return params, data, splits, model_input, info


@pytest.fixture(scope="module")
def text_run(base_ingest_conf):
    params = {**base_ingest_conf["text"]["ingest"], "max_examples": 900, "seq_len": 32}
    params["tokenizer"] = {"vocab_size": 600, "min_frequency": 2}
    data = nodes.load_text_source(params)
    splits = nodes.split_dataset(data, params)
    tokenizer_json = nodes.train_tokenizer(data, splits, params)
    model_input, info, texts = nodes.build_text_input(data, splits, tokenizer_json, params)
    return params, data, splits, tokenizer_json, model_input, info, texts


# ---------------------------------------------------------------- parameter validation


@pytest.mark.parametrize(
    ("modality", "overrides", "message"),
    [
        (
            "image",
            {"label_fractions": [0.01, 1.5]},
            "parameters_ingest.yml: image.ingest.label_fractions: 1.5 is outside (0, 1]",
        ),
        ("image", {"label_fractions": [0.0]}, "image.ingest.label_fractions: 0.0 is outside"),
        ("image", {"seeds": 1}, "image.ingest.seeds: unknown key"),
        ("image", {"source": "imagenet"}, "image.ingest.source: 'imagenet' is not one of"),
        ("image", {"val_fraction": 0.5, "test_fraction": 0.5}, "leaves no train"),
        ("image", {"test_fraction": 1.2}, "image.ingest.test_fraction: 1.2 is outside (0, 1)"),
        ("image", {"max_examples": 0}, "image.ingest.max_examples: 0 is outside"),
        (
            "image",
            {"source": "torchvision", "torchvision": {"name": "SVHN"}},
            "image.ingest.torchvision.name: 'SVHN' is not one of",
        ),
        (
            "speech",
            {"espeak": {"variants": ["m1", "whisper"]}},
            "speech.ingest.espeak.variants: ['whisper'] add random breath noise",
        ),
        ("speech", {"espeak": {"pitch": [20, 120]}}, "speech.ingest.espeak.pitch: [20, 120]"),
        ("speech", {"espeak": {"words": [True, "no"]}}, "speech.ingest.espeak.words: True"),
        ("speech", {"espeak": {"workers": 0}}, "speech.ingest.espeak.workers: 0 is outside"),
        ("text", {"seq_len": 2}, "text.ingest.seq_len: 2 is outside [3, inf]"),
        ("text", {"tokenizer": {"vocab": 10}}, "text.ingest.tokenizer.vocab: unknown key"),
        ("text", {"table": {"sep": "||"}, "source": "table"}, "text.ingest.table.sep: '||'"),
    ],
)
def test_bad_parameters_name_the_key(ingest_params, modality, overrides, message):
    params = ingest_params(modality, **overrides)
    loader = {
        "image": nodes.load_image_source,
        "speech": nodes.load_speech_source,
        "text": nodes.load_text_source,
    }[modality]
    with pytest.raises(IngestParameterError) as info:
        loader(params)
    assert message in str(info.value)


def test_missing_parameter_is_named(ingest_params):
    params = ingest_params("image")
    del params["seed"]
    with pytest.raises(IngestParameterError, match=r"image\.ingest\.seed: missing"):
        nodes.load_image_source(params)


def test_base_parameters_are_valid(base_ingest_conf):
    for modality in ("image", "speech", "text"):
        cfg = nodes.parse_ingest_params(modality, base_ingest_conf[modality]["ingest"])
        assert cfg.split.label_fractions == (0.01, 0.1, 1.0)
    speech = nodes.parse_ingest_params("speech", base_ingest_conf["speech"]["ingest"])
    assert len(speech.options["synthesis"].words) == 35
    assert len(speech.options["synthesis"].speaker_names) == 88


# ---------------------------------------------------------------- image lane


def test_image_splits_are_disjoint_complete_and_stratified(image_run):
    _, data, splits, *_ = image_run
    rows = {name: set(splits[name]) for name in SPLITS}
    assert not rows["train"] & rows["val"] and not rows["train"] & rows["test"]
    assert not rows["val"] & rows["test"]
    assert set().union(*rows.values()) == set(range(len(data)))
    assert [len(splits[n]) for n in SPLITS] == [420, 60, 120]  # 70/10/20 of 600
    for name in SPLITS:
        counts = np.bincount(data.labels[splits[name]], minlength=10)
        assert counts.min() > 0 and counts.max() - counts.min() <= 1
    # rows come shuffled (the source is sorted by label)
    assert not np.all(np.diff(data.labels[splits["train"]]) >= 0)


def test_image_input_is_normalised_with_train_statistics(image_run):
    _, data, splits, model_input, info, _ = image_run
    x = model_input["train.x"]
    assert x.dtype == torch.float32 and tuple(x.shape) == (420, 1, 28, 28)
    assert model_input["train.y"].dtype == torch.int64
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3
    mean, std = info["mean"][0], info["std"][0]
    raw_val = data.images[splits["val"]].astype(np.float32) / 255
    np.testing.assert_allclose(model_input["val.x"].numpy() * std + mean, raw_val, atol=1e-5)
    assert info["input_shape"] == [1, 28, 28] and info["num_classes"] == 10
    assert info["counts"] == {"train": 420, "val": 60, "test": 120}
    assert info["content_hash"] == tensors_sha256(model_input)


def test_label_subsets_are_nested_stratified_and_sorted(image_run):
    *_, model_input, _, by_draw = image_run
    assert list(by_draw) == ["0.01", "0.1", "1.0"]
    draws = {key: set(v) for key, v in by_draw.items()}
    assert all(keys == set(map(str, range(len(keys)))) for keys in draws.values())
    if len(draws["0.1"]) > 1:  # independent draws pick different examples
        assert by_draw["0.1"]["0"] != by_draw["0.1"]["1"]
    subsets = {key: v["0"] for key, v in by_draw.items()}
    train_y = model_input["train.y"].numpy()
    assert subsets["1.0"] == list(range(len(train_y)))
    previous: set[int] = set()
    for key in subsets:
        rows = subsets[key]
        assert rows == sorted(rows) and previous <= set(rows)
        counts = np.bincount(train_y[rows], minlength=10)
        assert counts.min() >= 1  # every class, even at 1%
        previous = set(rows)
    assert len(subsets["0.1"]) == 40  # 42 per class * 0.1 -> 4


def test_same_seed_same_hash_other_seed_other_split(image_run):
    params, _, splits, _, info, subsets = image_run
    again = _image_lane(params)
    assert again[1] == splits and again[3]["content_hash"] == info["content_hash"]
    assert again[4] == subsets
    other = _image_lane({**params, "seed": 1})
    assert other[1]["test"] != splits["test"]
    assert other[3]["content_hash"] != info["content_hash"]


def test_split_that_empties_a_class_is_named(ingest_params):
    params = ingest_params("image", max_examples=20)  # 2 digits per class
    data = nodes.load_image_source(params)
    with pytest.raises(ValueError, match=r"class '0' \(id 0\) has only 2 examples"):
        nodes.split_dataset(data, params)


def test_summary_counts_agree_with_arrays(image_run):
    *_, model_input, info, subsets = image_run
    summary = nodes.summarise_dataset(model_input, info, subsets)
    for split in SPLITS:
        assert sum(summary["class_counts"][split].values()) == info["counts"][split]
    assert summary["label_subsets"]["0.01"]["min_per_class"] >= 1
    assert summary["arrays"]["train.x"] == {"shape": [420, 1, 28, 28], "dtype": "float32"}
    assert summary["content_hash"] == info["content_hash"]


# ---------------------------------------------------------------- speech lane


def test_speech_train_val_and_test_speakers_are_disjoint(speech_run):
    params, data, splits, model_input, info = speech_run
    speakers = {n: set(model_input[f"{n}.speaker"].tolist()) for n in SPLITS}
    assert not speakers["train"] & speakers["val"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["val"] & speakers["test"]
    # 10 speakers x 4 words: test >= 20 % of the clips (2 speakers), val >= 10 % (1)
    assert [len(speakers[n]) for n in SPLITS] == [7, 1, 2]
    for name in SPLITS:  # every speaker says every word: each split has every class
        assert set(model_input[f"{name}.y"].tolist()) == {0, 1, 2, 3}
    for name in ("val", "test"):
        assert info[f"{name}_speakers"] == sorted(data.speaker_names[s] for s in speakers[name])
    assert sum(info["counts"].values()) == len(data) == 40
    summary = nodes.summarise_dataset(
        model_input, info, nodes.make_label_subsets(data, splits, params)
    )
    assert summary["speakers"] == {"train": 7, "val": 1, "test": 2}
    assert summary["speakers_shared"] == {"train_val": 0, "train_test": 0, "val_test": 0}
    assert summary["speakers_disjoint"] is True


def test_speech_smoke_env_has_every_word_in_every_split(base_ingest_conf, tmp_path):
    """conf/smoke's voices are enough for disjoint speaker splits that each hold every word."""
    smoke = yaml.safe_load((PROJECT_ROOT / "conf/smoke/parameters_ingest.yml").read_text())
    params = copy.deepcopy(base_ingest_conf["speech"]["ingest"])
    params["espeak"].update(smoke["speech"]["ingest"]["espeak"], cache_dir=str(tmp_path))
    data = nodes.load_speech_source(params)
    splits = nodes.split_dataset(data, params)
    speakers = {n: set(data.speakers[splits[n]].tolist()) for n in SPLITS}
    assert all(speakers.values())
    assert sum(len(v) for v in speakers.values()) == len(set().union(*speakers.values()))
    for name in SPLITS:
        assert set(data.labels[splits[name]].tolist()) == set(range(len(data.class_names)))


def test_speaker_split_takes_a_further_speaker_for_a_missing_word():
    """Whole speakers cannot always give every split every word; a split that lacks one
    takes the next speaker (in the seeded order) who says it, if enough are left."""
    speakers = np.repeat(np.arange(12), 4)
    labels = np.tile([0, 1, 0, 1], 12)
    labels[speakers >= 9] = np.tile([0, 1, 2, 2], 3)  # only speakers 9-11 say word 2
    cfg = nodes.SplitConfig(0, 0.1, 0.2, (1.0,), None)
    out = nodes.split_indices(labels, ["a", "b", "c"], cfg, speakers)
    by_split = {n: set(speakers[out[n]].tolist()) for n in SPLITS}
    assert sum(len(v) for v in by_split.values()) == 12 == len(set().union(*by_split.values()))
    for name in SPLITS:
        assert set(labels[out[name]].tolist()) == {0, 1, 2}, name
        assert len(by_split[name] & {9, 10, 11}) == 1
    # deterministic from the seed
    again = nodes.split_indices(labels, ["a", "b", "c"], cfg, speakers)
    assert all(np.array_equal(out[n], again[n]) for n in SPLITS)


def test_speech_clips_are_normalised_per_clip(speech_run):
    *_, model_input, info = speech_run
    x = model_input["train.x"]
    assert x.dtype == torch.float32 and x.shape[1] == 16_000
    assert torch.allclose(x.mean(dim=1), torch.zeros(len(x)), atol=1e-4)
    assert torch.allclose(x.std(dim=1, unbiased=False), torch.ones(len(x)), atol=1e-3)
    assert model_input["train.speaker"].dtype == torch.int64
    assert info["sample_rate"] == 16_000 and info["input_shape"] == [16_000]


def test_speaker_split_that_empties_a_class_is_named(speech_run):
    params, data, *_ = speech_run
    # the word "yes" (id 0) kept for one speaker only: train or test must lack it
    keep = [i for i in range(len(data)) if data.labels[i] != 0 or data.speakers[i] == 0]
    with pytest.raises(ValueError, match=r"class 'yes' \(id 0\) with no examples in"):
        nodes.split_dataset(data.take(keep), params)


# ---------------------------------------------------------------- text lane


def test_text_input_matches_contract(text_run):
    *_, model_input, info, _ = text_run
    for name in SPLITS:
        x, mask = model_input[f"{name}.x"], model_input[f"{name}.attention_mask"]
        assert x.dtype == torch.int64 and mask.dtype == torch.bool and x.shape[1] == 32
        assert torch.all(x[:, 0] == info["cls_id"])
        assert torch.all((x == info["pad_id"]) == ~mask)
    assert model_input["unlabelled.x"].shape[0] == info["counts"]["unlabelled"] > 1000
    assert (info["pad_id"], info["cls_id"], info["mask_id"], info["eos_id"]) == (0, 1, 2, 4)
    assert info["vocab_size"] == 600 and info["seq_len"] == 32


def test_text_table_rows_follow_model_input_rows(text_run):
    *_, tokenizer_json, model_input, info, texts = text_run
    tokenizer = Tokenizer.from_str(tokenizer_json)
    assert list(texts.columns) == ["split", "text", "label"]
    for name in SPLITS:
        part = texts[texts["split"] == name].reset_index(drop=True)
        assert len(part) == info["counts"][name]
        np.testing.assert_array_equal(part["label"].to_numpy(), model_input[f"{name}.y"].numpy())
        for i in range(0, len(part), 37):
            ids = model_input[f"{name}.x"][i].tolist()
            if ids[-1] == 0:  # not truncated: decodes back to the very text
                assert tokenizer.decode(ids) == part["text"][i]


def test_tokenizer_never_sees_val_or_test(text_run):
    params, data, splits, tokenizer_json, *_ = text_run
    scrambled = data.take(range(len(data)))
    for i in splits["val"] + splits["test"]:
        scrambled.texts[i] = "zqzqzq xvxvxv " * 3
    assert nodes.train_tokenizer(scrambled, splits, params) == tokenizer_json


def test_text_table_source_errors_name_file_and_column(ingest_params, tmp_path):
    path = tmp_path / "sst2.tsv"
    path.write_text("sentence\tlabel\na fine film\t1\na dull film\t0\n", encoding="utf-8")
    params = ingest_params(
        "text", source="table", table={"path": str(path), "label_column": "polarity"}
    )
    with pytest.raises(ValueError, match=r"sst2\.tsv: label_column 'polarity' is not a column"):
        nodes.load_text_source(params)


def test_max_examples_keeps_exactly_that_many(image_run):
    """`max_examples: 600` keeps 600 (rounding each class's share on its own kept 599)."""
    *_, info, _ = image_run
    assert sum(info["counts"][s] for s in SPLITS) == 600


def test_a_label_that_looks_like_a_typo_reaches_the_ingest_summary(ingest_params, tmp_path):
    rows = [f"good film {i}\tpositive" for i in range(70)]
    rows += [f"bad film {i}\tnegative" for i in range(70)]
    rows += [
        f"fine film {i}\tpostive" for i in range(3)
    ]  # a typo, 3 of 70 (the fewest a split takes)
    path = tmp_path / "reviews.tsv"
    path.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    params = ingest_params(
        "text", source="table", table={"path": str(path), "label_column": "label"}
    )
    params.update(seq_len=16, tokenizer={"vocab_size": 300, "min_frequency": 1})
    data = nodes.load_text_source(params)
    splits = nodes.split_dataset(data, params)
    tokenizer_json = nodes.train_tokenizer(data, splits, params)
    model_input, info, _ = nodes.build_text_input(data, splits, tokenizer_json, params)
    subsets = nodes.make_label_subsets(data, splits, params)
    summary = nodes.summarise_dataset(model_input, info, subsets)
    assert [(s["label"], s["similar_to"]) for s in summary["suspect_labels"]] == [
        ("postive", "positive")
    ]
    assert "postive" in summary["class_counts"]["train"]  # kept as a class, but reported
