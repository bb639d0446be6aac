"""Ingest nodes: raw source -> validated arrays, seeded splits, label subsets, summaries.

Plain functions (no Kedro import). Every node that takes ``params:ingest`` validates the whole
block first (:func:`parse_ingest_params`), with errors naming the key as a user finds it in
conf, e.g. ``parameters_ingest.yml: image.ingest.label_fractions: 1.5 is outside (0, 1]``.

Splits (all seeded, all deterministic):
- train/val/test are stratified by class; every split gets at least one example of every
  class (a class too small for that is an error naming it). Speech splits by whole speakers
  (a group split): train, val and test speakers are pairwise disjoint, so validation, like
  test, measures unseen voices and selection happens on the distribution that is scored.
- each split's rows are in a seeded random order (MNIST 5k ships sorted by label).
- label subsets are nested prefixes of one seeded per-class permutation of the train rows:
  a fraction f keeps max(1, round(f * n_c)) rows of class c. So each subset holds at least
  one example per class and every smaller subset lies inside every larger one; the realised
  sizes (which can exceed f * N slightly for tiny f) are in the dataset summary.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from d2v_pipeline.io import sha256_bytes
from d2v_pipeline.sources import image as image_sources
from d2v_pipeline.sources import speech as speech_sources
from d2v_pipeline.sources import text as text_sources
from d2v_pipeline.sources.image import ImageData
from d2v_pipeline.sources.speech import SpeechData, SynthesisConfig
from d2v_pipeline.sources.text import TextData

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
PARAMS_FILE = "parameters_ingest.yml"
# distinct random streams derived from the one user seed (numpy SeedSequence entropy lists)
_SUBSAMPLE_STREAM, _SPLIT_STREAM, _ORDER_STREAM, _SUBSET_STREAM = 1, 2, 3, 4

SourceData = ImageData | SpeechData | TextData


# ----------------------------------------------------------------------------- parameters


class IngestParameterError(ValueError):
    """A value in parameters_ingest.yml is missing, unknown or out of range."""


_MISSING = object()


class _Params:
    """Typed reads from one nested params dict, with errors that name the full key."""

    def __init__(self, values: Any, path: str) -> None:
        self.path = path
        if not isinstance(values, dict):
            self.fail(None, f"expected a mapping, got {values!r}")
        self.values = values

    def fail(self, key: str | None, message: str) -> None:
        where = f"{self.path}.{key}" if key else self.path
        raise IngestParameterError(f"{PARAMS_FILE}: {where}: {message}")

    def only(self, *allowed: str) -> None:
        """Reject keys this block does not know (typos would otherwise be silently ignored)."""
        unknown = sorted(set(self.values) - set(allowed))
        if unknown:
            self.fail(unknown[0], f"unknown key (known: {', '.join(sorted(allowed))})")

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        if key not in self.values:
            if default is _MISSING:
                self.fail(key, "missing")
            return default
        return self.values[key]

    def section(self, key: str) -> _Params:
        return _Params(self.raw(key), f"{self.path}.{key}")

    def choice(self, key: str, options: tuple[str, ...]) -> str:
        value = self.raw(key)
        if value not in options:
            self.fail(key, f"{value!r} is not one of {', '.join(options)}")
        return value

    def string(self, key: str) -> str:
        value = self.raw(key)
        if not isinstance(value, str) or not value:
            self.fail(key, f"{value!r} is not a non-empty string")
        return value

    def boolean(self, key: str) -> bool:
        value = self.raw(key)
        if not isinstance(value, bool):
            self.fail(key, f"{value!r} is not true/false")
        return value

    def integer(self, key: str, low: int | None = None, high: int | None = None) -> int:
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"{value!r} is not an integer")
        if (low is not None and value < low) or (high is not None and value > high):
            self.fail(key, f"{value} is outside [{low}, {high if high is not None else 'inf'}]")
        return value

    def optional_integer(self, key: str, low: int) -> int | None:
        return None if self.raw(key) is None else self.integer(key, low)

    def number(self, key: str, value: Any = _MISSING) -> float:
        value = self.raw(key) if value is _MISSING else value
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            self.fail(key, f"{value!r} is not a number")
        return float(value)

    def fraction(self, key: str, value: Any = _MISSING, upper_open: bool = True) -> float:
        """A number in (0, 1) (``upper_open``) or (0, 1]."""
        value = self.number(key, value)
        if not (0 < value < 1 or (not upper_open and value == 1)):
            self.fail(key, f"{value} is outside (0, 1{')' if upper_open else ']'}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.raw(key)
        if not isinstance(value, list) or not value:
            self.fail(key, f"{value!r} is not a non-empty list")
        for item in value:
            if not isinstance(item, str) or not item:
                self.fail(key, f"{item!r} is not a non-empty string")
        if len(set(value)) != len(value):
            self.fail(key, "has duplicate entries")
        return tuple(value)

    def number_range(self, key: str, integer: bool = False) -> tuple[float, float]:
        value = self.raw(key)
        if not isinstance(value, list) or len(value) != 2:
            self.fail(key, f"{value!r} is not a [low, high] pair")
        low, high = (self.number(key, v) for v in value)
        if low > high:
            self.fail(key, f"low {low} is above high {high}")
        if integer and (low != int(low) or high != int(high)):
            self.fail(key, f"{value!r} must be integers")
        return (int(low), int(high)) if integer else (low, high)


@dataclass(frozen=True)
class SplitConfig:
    """What every modality shares: seed, split fractions, label fractions, subsampling."""

    seed: int
    val_fraction: float
    test_fraction: float
    label_fractions: tuple[float, ...]
    max_examples: int | None
    label_subset_draws: int = 1


@dataclass(frozen=True)
class IngestConfig:
    """The validated ``<modality>.ingest`` block; ``options`` holds the source-specific part."""

    modality: str
    source: str
    split: SplitConfig
    options: dict[str, Any]


_COMMON_KEYS = ("source", "seed", "val_fraction", "test_fraction", "label_fractions")
_COMMON_KEYS += ("max_examples", "label_subset_draws")


def _split_config(p: _Params) -> SplitConfig:
    val = p.fraction("val_fraction")
    test = p.fraction("test_fraction")
    if val + test >= 1:
        p.fail("test_fraction", f"val_fraction + test_fraction = {val + test} leaves no train")
    fractions = p.raw("label_fractions")
    if not isinstance(fractions, list) or not fractions:
        p.fail("label_fractions", f"{fractions!r} is not a non-empty list")
    values = tuple(sorted({p.fraction("label_fractions", f, upper_open=False) for f in fractions}))
    return SplitConfig(
        seed=p.integer("seed", 0),
        val_fraction=val,
        test_fraction=test,
        label_fractions=values,
        max_examples=p.optional_integer("max_examples", 1),
        label_subset_draws=p.integer("label_subset_draws", 1),
    )


def _image_options(p: _Params, source: str) -> dict[str, Any]:
    p.only(*_COMMON_KEYS, "torchvision", "folder")
    if source == "torchvision":
        tv = p.section("torchvision")
        tv.only("name", "root")
        return {
            "name": tv.choice("name", image_sources.TORCHVISION_DATASETS),
            "root": tv.string("root"),
        }
    if source == "folder":
        folder = p.section("folder")
        folder.only("root", "channels")
        channels = folder.raw("channels")
        if channels not in ("auto", 1, 3):
            folder.fail("channels", f"{channels!r} is not one of auto, 1, 3")
        return {"root": folder.string("root"), "channels": channels}
    return {}


def _speech_options(p: _Params, source: str) -> dict[str, Any]:
    p.only(*_COMMON_KEYS, "sample_rate", "clip_seconds", "espeak", "folder")
    sample_rate = p.integer("sample_rate", 1000)
    clip_seconds = p.number("clip_seconds")
    if clip_seconds <= 0:
        p.fail("clip_seconds", f"{clip_seconds} is not positive")
    options: dict[str, Any] = {"sample_rate": sample_rate, "clip_seconds": clip_seconds}
    if source == "folder":
        folder = p.section("folder")
        folder.only("root")
        options["root"] = folder.string("root")
        return options
    es = p.section("espeak")
    es.only(
        "cache_dir", "workers", "progress", "seed", "words", "accents", "variants", "repeats",
        "rate_wpm", "pitch", "peak_dbfs", "noise_dbfs", "trim_db",
    )  # fmt: skip
    variants = es.strings("variants")
    breath = sorted(set(variants) & speech_sources.BREATH_VARIANTS)
    if breath:
        es.fail("variants", f"{breath} add random breath noise (not reproducible); leave them out")
    unknown = sorted(set(variants) - speech_sources.variant_names())
    if unknown:
        es.fail("variants", f"{unknown} are not espeak-ng variants (see espeak-ng-data/voices/!v)")
    rate = es.number_range("rate_wpm", integer=True)
    pitch = es.number_range("pitch", integer=True)
    if not (rate[0] >= 80 and rate[1] <= 450):
        es.fail("rate_wpm", f"{list(rate)} is outside espeak-ng's [80, 450] words per minute")
    if not (pitch[0] >= 0 and pitch[1] <= 99):
        es.fail("pitch", f"{list(pitch)} is outside espeak-ng's [0, 99]")
    peak = es.number_range("peak_dbfs")
    if peak[1] > 0:
        es.fail("peak_dbfs", f"{list(peak)}: a peak above 0 dBFS would clip")
    trim_db = es.number("trim_db")
    if trim_db <= 0:
        es.fail("trim_db", f"{trim_db} is not positive")
    options["synthesis"] = SynthesisConfig(
        words=es.strings("words"),
        accents=es.strings("accents"),
        variants=variants,
        repeats=es.integer("repeats", 1),
        rate_wpm=rate,
        pitch=pitch,
        peak_dbfs=peak,
        noise_dbfs=es.number_range("noise_dbfs"),
        trim_db=trim_db,
        sample_rate=sample_rate,
        clip_seconds=clip_seconds,
        seed=es.integer("seed", 0),
    )
    options["cache_dir"] = es.string("cache_dir")
    options["workers"] = es.integer("workers", 1, 64)
    options["progress"] = es.boolean("progress")
    return options


def _text_options(p: _Params, source: str) -> dict[str, Any]:
    p.only(
        *_COMMON_KEYS, "rotten_tomatoes", "table", "drop_duplicates", "use_unlabelled",
        "tokenizer", "seq_len", "add_eos",
    )  # fmt: skip
    tok = p.section("tokenizer")
    tok.only("vocab_size", "min_frequency")
    options: dict[str, Any] = {
        "drop_duplicates": p.boolean("drop_duplicates"),
        "use_unlabelled": p.boolean("use_unlabelled"),
        "vocab_size": tok.integer("vocab_size", 256 + len(text_sources.SPECIAL_TOKENS)),
        "min_frequency": tok.integer("min_frequency", 1),
        "seq_len": p.integer("seq_len", 3),
        "add_eos": p.boolean("add_eos"),
    }
    if source == "table":
        table = p.section("table")
        table.only("path", "text_column", "label_column", "sep")
        sep = table.raw("sep")
        if sep is not None and (not isinstance(sep, str) or len(sep) != 1):
            table.fail("sep", f"{sep!r} is not null or a single character")
        options.update(
            path=table.string("path"),
            text_column=table.string("text_column"),
            label_column=table.string("label_column"),
            sep=sep,
        )
    return options


_SOURCES = {
    "image": (("mnist_5k", "torchvision", "folder"), _image_options),
    "speech": (("espeak", "folder"), _speech_options),
    "text": (("rotten_tomatoes", "table"), _text_options),
}


def parse_ingest_params(modality: str, params: dict[str, Any]) -> IngestConfig:
    """Validate ``<modality>.ingest`` from conf; raises :class:`IngestParameterError`."""
    if modality not in _SOURCES:
        raise IngestParameterError(f"unknown modality {modality!r}; expected {list(_SOURCES)}")
    p = _Params(params, f"{modality}.ingest")
    sources, read_options = _SOURCES[modality]
    source = p.choice("source", sources)
    split = _split_config(p)
    return IngestConfig(modality, source, split, read_options(p, source))


# ----------------------------------------------------------------------------- splitting


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def _share(fraction: float, count: int) -> int:
    """round(fraction * count) half up, at least 1 (every class in every split)."""
    return max(1, math.floor(fraction * count + 0.5))


def stratified_subsample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of about ``size`` rows keeping class proportions (>= 1 per class)."""
    if size >= len(labels):
        return np.arange(len(labels))
    rng = _rng(seed, _SUBSAMPLE_STREAM)
    picks = []
    for c in np.unique(labels):
        members = np.nonzero(labels == c)[0]
        keep = min(len(members), _share(size / len(labels), len(members)))
        picks.append(rng.permutation(members)[:keep])
    return np.sort(np.concatenate(picks))


def _class_name(class_names: list[str], c: int) -> str:
    return f"{class_names[c]!r} (id {c})"


def _stratified(
    indices: np.ndarray, labels: np.ndarray, fractions: dict[str, float], rng: np.random.Generator,
    class_names: list[str],
) -> dict[str, np.ndarray]:  # fmt: skip
    """Split ``indices`` per class into the named fractions plus "rest"."""
    out: dict[str, list[np.ndarray]] = {name: [] for name in (*fractions, "rest")}
    for c in range(len(class_names)):
        members = rng.permutation(indices[labels[indices] == c])
        start = 0
        for name, fraction in fractions.items():
            take = _share(fraction, len(members))
            out[name].append(members[start : start + take])
            start += take
        if start >= len(members):
            raise ValueError(
                f"class {_class_name(class_names, c)} has only {len(members)} examples: "
                f"splitting it into {', '.join(fractions)} and train leaves train without it"
            )
        out["rest"].append(members[start:])
    return {name: np.concatenate(parts) for name, parts in out.items()}


def _take_groups(
    order: list[Any], groups: np.ndarray, labels: np.ndarray, target: float, spare: int
) -> list[Any]:
    """Whole groups from the front of ``order`` until they hold at least ``target`` rows;
    then, for each class they lack, the next group in ``order`` that has it, provided
    ``spare`` more such groups stay behind for the splits still to be drawn (stratification
    by label as far as whole groups allow)."""
    sizes = dict(zip(*np.unique(groups, return_counts=True), strict=True))
    taken: list[Any] = []
    rows = 0
    for g in order:
        if rows >= target:
            break
        taken.append(g)
        rows += int(sizes[g])
    for c in np.unique(labels):
        with_c = set(np.unique(groups[labels == c]).tolist())
        if with_c & set(taken):
            continue
        having = [g for g in order if g in with_c]  # none of them taken yet
        if len(having) > spare:
            taken.append(having[0])
    return taken


def split_indices(
    labels: np.ndarray,
    class_names: list[str],
    split: SplitConfig,
    groups: np.ndarray | None = None,
    group_names: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Seeded train/val/test row indices (each split in a seeded random order).

    Without ``groups`` all three splits are stratified by class. With ``groups`` (speakers)
    every split takes whole groups: in one seeded order, test takes groups until it holds at
    least ``test_fraction`` of the rows, val the next ones until ``val_fraction``, train the
    rest; a split that lacks a class takes the next group that has it (:func:`_take_groups`).
    The three group sets are disjoint. Raises ValueError naming the class when a split would
    have none of it.
    """
    labels = np.asarray(labels)
    present = set(np.unique(labels).tolist())
    missing = [c for c in range(len(class_names)) if c not in present]
    if missing:
        raise ValueError(f"class {_class_name(class_names, missing[0])} has no examples at all")
    rng = _rng(split.seed, _SPLIT_STREAM)
    everything = np.arange(len(labels))
    if groups is None:
        parts = _stratified(
            everything,
            labels,
            {"test": split.test_fraction, "val": split.val_fraction},
            rng,
            class_names,
        )
        out = {"train": parts["rest"], "val": parts["val"], "test": parts["test"]}
    else:
        groups = np.asarray(groups)
        order = list(rng.permutation(np.unique(groups)))
        n = len(labels)
        test_groups = _take_groups(order, groups, labels, split.test_fraction * n, spare=2)
        rest = [g for g in order if g not in test_groups]
        val_groups = _take_groups(rest, groups, labels, split.val_fraction * n, spare=1)
        by_split = {
            "train": [g for g in rest if g not in val_groups],
            "val": val_groups,
            "test": test_groups,
        }
        if not by_split["train"]:
            raise ValueError(
                f"only {len(order)} speakers: holding out {split.test_fraction:.0%} of the clips "
                f"for test and {split.val_fraction:.0%} for val leaves no speaker for train"
            )
        out = {name: everything[np.isin(groups, gs)] for name, gs in by_split.items()}
        for c in range(len(class_names)):
            for name in ("test", "val", "train"):
                if not np.any(labels[out[name]] == c):
                    names = [group_names[g] if group_names else str(g) for g in by_split[name]]
                    listed = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
                    raise ValueError(
                        f"the speaker split leaves class {_class_name(class_names, c)} with no "
                        f"examples in {name} ({name} speakers: {listed})"
                    )
    order_rng = _rng(split.seed, _ORDER_STREAM)
    return {name: order_rng.permutation(np.sort(rows)) for name, rows in out.items()}


def fraction_key(fraction: float) -> str:
    """The label_subsets key of a fraction: "0.01", "0.1", "1.0"."""
    return repr(float(fraction))


def nested_label_subsets(
    train_labels: np.ndarray, fractions: tuple[float, ...], seed: int, draw: int = 0
) -> dict[str, list[int]]:
    """Nested, stratified subsets of the train rows (positions in train.x), sorted.

    Each class's train rows are permuted once (seeded by ``seed`` and ``draw``); fraction f
    keeps the first max(1, round(f * n_c)) of them, so smaller subsets are prefixes of
    larger ones. Different draws give independent subsets (the spread over seeds).
    """
    rng = (
        _rng(seed, _SUBSET_STREAM)
        if draw == 0
        else np.random.default_rng([seed, _SUBSET_STREAM, draw])
    )
    train_labels = np.asarray(train_labels)
    permuted = [rng.permutation(np.nonzero(train_labels == c)[0]) for c in np.unique(train_labels)]
    out = {}
    for fraction in sorted(fractions):
        keep = [rows[: min(len(rows), _share(fraction, len(rows)))] for rows in permuted]
        out[fraction_key(fraction)] = sorted(int(i) for i in np.concatenate(keep))
    return out


def tensor_dict_hash(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over keys, dtypes, shapes and bytes (order independent of dict order)."""
    chunks = []
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        chunks.append(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        chunks.append(t.numpy().tobytes())
    return sha256_bytes(*chunks)


# ----------------------------------------------------------------------------- nodes


def _subsample(data: SourceData, cfg: IngestConfig) -> SourceData:
    if cfg.split.max_examples is None or cfg.split.max_examples >= len(data):
        return data
    keep = stratified_subsample(data.labels, cfg.split.max_examples, cfg.split.seed)
    log.info(
        "%s: kept a stratified %d of %d examples (max_examples)", cfg.modality, len(keep), len(data)
    )
    return data.take(keep)


def load_image_source(params: dict[str, Any]) -> ImageData:
    """Read the configured image source (uint8 N×C×H×W + labels), optionally subsampled."""
    cfg = parse_ingest_params("image", params)
    if cfg.source == "mnist_5k":
        data = image_sources.read_mnist_5k()
    elif cfg.source == "torchvision":
        data = image_sources.read_torchvision(cfg.options["name"], cfg.options["root"])
    else:
        data = image_sources.read_image_folder(cfg.options["root"], cfg.options["channels"])
    log.info("image: %d images %s from %s", len(data), data.images.shape[1:], data.source)
    return _subsample(data, cfg)


def load_speech_source(params: dict[str, Any]) -> SpeechData:
    """Synthesise (or reuse the cached) keyword clips, or read a WAV folder."""
    cfg = parse_ingest_params("speech", params)
    opts = cfg.options
    if cfg.source == "espeak":
        data = speech_sources.load_or_synthesize(
            opts["synthesis"], opts["cache_dir"], workers=opts["workers"], progress=opts["progress"]
        )
    else:
        data = speech_sources.read_wav_folder(
            opts["root"], opts["sample_rate"], opts["clip_seconds"]
        )
    log.info(
        "speech: %d clips, %d words, %d speakers from %s",
        len(data),
        len(data.class_names),
        len(data.speaker_names),
        data.source,
    )
    return _subsample(data, cfg)


def load_text_source(params: dict[str, Any]) -> TextData:
    """Read Rotten Tomatoes (default) or a CSV/TSV table; empty texts and duplicates dropped."""
    cfg = parse_ingest_params("text", params)
    opts = cfg.options
    if cfg.source == "rotten_tomatoes":
        data = text_sources.read_rotten_tomatoes(
            include_plot=opts["use_unlabelled"], drop_duplicates=opts["drop_duplicates"]
        )
    else:
        data = text_sources.read_text_table(
            opts["path"],
            opts["text_column"],
            opts["label_column"],
            opts["sep"],
            opts["drop_duplicates"],
        )
    log.info(
        "text: %d labelled and %d unlabelled texts from %s",
        len(data),
        len(data.unlabelled),
        data.source,
    )
    return _subsample(data, cfg)


def split_dataset(data: SourceData, params: dict[str, Any]) -> dict[str, list[int]]:
    """Seeded stratified train/val/test indices into the source rows (speech: by speaker)."""
    cfg = parse_ingest_params(data.modality, params)
    groups = data.groups if data.modality == "speech" else None
    names = data.speaker_names if isinstance(data, SpeechData) else None
    try:
        splits = split_indices(data.labels, data.class_names, cfg.split, groups, names)
    except ValueError as exc:
        raise ValueError(f"{data.modality} ({data.source}): {exc}") from exc
    log.info("%s: split %s", data.modality, ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return {name: [int(i) for i in rows] for name, rows in splits.items()}


def make_label_subsets(
    data: SourceData, splits: dict[str, list[int]], params: dict[str, Any]
) -> dict[str, dict[str, list[int]]]:
    """Nested labelled subsets of train (positions in ``train.x``) at the label fractions,
    one independent draw per evaluation seed: ``{fraction: {draw: rows}}``.

    Evaluation with seed s uses draw s, so the spread over seeds includes which
    examples were labelled (at 1 % that choice dominates the variance).
    """
    cfg = parse_ingest_params(data.modality, params)
    train_labels = data.labels[np.asarray(splits["train"], dtype=np.int64)]
    draws = [
        nested_label_subsets(train_labels, cfg.split.label_fractions, cfg.split.seed, draw=d)
        for d in range(cfg.split.label_subset_draws)
    ]
    return {key: {str(d): draw[key] for d, draw in enumerate(draws)} for key in draws[0]}


def _labels_and_counts(
    data: SourceData, splits: dict[str, list[int]]
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    tensors, counts = {}, {}
    for name in SPLITS:
        rows = np.asarray(splits[name], dtype=np.int64)
        tensors[f"{name}.y"] = torch.from_numpy(data.labels[rows].astype(np.int64))
        counts[name] = len(rows)
    return tensors, counts


def _info(data: SourceData, cfg: IngestConfig, tensors: dict, counts: dict, **extra: Any) -> dict:
    return {
        "modality": data.modality,
        "num_classes": len(data.class_names),
        "class_names": list(data.class_names),
        "input_shape": list(tensors["train.x"].shape[1:]),
        "source": data.source,
        "content_hash": tensor_dict_hash(tensors),
        "counts": counts,
        "seed": cfg.split.seed,
        "val_fraction": cfg.split.val_fraction,
        "test_fraction": cfg.split.test_fraction,
        "label_fractions": [fraction_key(f) for f in cfg.split.label_fractions],
        **extra,
    }


def build_image_input(
    data: ImageData, splits: dict[str, list[int]], params: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Float N×C×H×W in [0, 1], normalised per channel with train-only mean/std."""
    cfg = parse_ingest_params("image", params)
    tensors, counts = _labels_and_counts(data, splits)
    train = data.images[np.asarray(splits["train"])].astype(np.float64) / 255.0
    # normalisation statistics from train only: val/test must not leak into preprocessing
    mean = train.mean(axis=(0, 2, 3))
    std = np.maximum(train.std(axis=(0, 2, 3)), 1e-8)
    for name in SPLITS:
        x = data.images[np.asarray(splits[name])].astype(np.float32) / 255.0
        x = (x - mean[None, :, None, None].astype(np.float32)) / std[None, :, None, None].astype(
            np.float32
        )
        tensors[f"{name}.x"] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    info = _info(
        data, cfg, tensors, counts, mean=mean.tolist(), std=std.tolist(), pixel_scale=255.0
    )
    return tensors, info


def normalise_clips(audio: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Per-clip zero mean / unit variance (spec §4: normalised per utterance), float32.

    ``eps`` only guards all-silent clips: quiet clips (peak -12 dBFS, variance ~1e-4) must
    still come out with unit variance, so it is far below any real clip's variance.
    """
    x = audio.astype(np.float64)
    if audio.dtype == np.int16:
        x /= 32768.0
    x -= x.mean(axis=1, keepdims=True)
    x /= np.sqrt(x.var(axis=1, keepdims=True) + eps)
    return x.astype(np.float32)


def build_speech_input(
    data: SpeechData, splits: dict[str, list[int]], params: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Float (N, S) clips, each normalised to zero mean / unit variance, plus speaker ids."""
    cfg = parse_ingest_params("speech", params)
    tensors, counts = _labels_and_counts(data, splits)
    speakers_per_split: dict[str, list[str]] = {}
    for name in SPLITS:
        rows = np.asarray(splits[name], dtype=np.int64)
        tensors[f"{name}.x"] = torch.from_numpy(normalise_clips(data.audio[rows]))
        tensors[f"{name}.speaker"] = torch.from_numpy(data.speakers[rows].astype(np.int64))
        speakers_per_split[name] = sorted({data.speaker_names[s] for s in data.speakers[rows]})
    info = _info(
        data,
        cfg,
        tensors,
        counts,
        sample_rate=data.sample_rate,
        num_speakers=len(data.speaker_names),
        speaker_names=list(data.speaker_names),
        val_speakers=speakers_per_split["val"],
        test_speakers=speakers_per_split["test"],
    )
    return tensors, info


def train_tokenizer(data: TextData, splits: dict[str, list[int]], params: dict[str, Any]) -> str:
    """Byte-level BPE trained on train texts (+ unlabelled texts), never val/test; as JSON."""
    cfg = parse_ingest_params("text", params)
    texts = [data.texts[i] for i in splits["train"]]
    if cfg.options["use_unlabelled"]:
        texts += data.unlabelled
    tokenizer = text_sources.train_tokenizer(
        texts, cfg.options["vocab_size"], cfg.options["min_frequency"]
    )
    log.info("text: tokenizer with %d tokens from %d texts", tokenizer.get_vocab_size(), len(texts))
    return tokenizer.to_str()


def build_text_input(
    data: TextData, splits: dict[str, list[int]], tokenizer_json: str, params: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any], pd.DataFrame]:
    """Token ids (N, L) int64 + attention masks (True = real token), and the raw text table."""
    from tokenizers import Tokenizer

    cfg = parse_ingest_params("text", params)
    tokenizer = Tokenizer.from_str(tokenizer_json)
    seq_len, add_eos = cfg.options["seq_len"], cfg.options["add_eos"]
    tensors, counts = _labels_and_counts(data, splits)
    truncated, rows = {}, []
    parts = {name: [data.texts[i] for i in splits[name]] for name in SPLITS}
    if cfg.options["use_unlabelled"] and data.unlabelled:
        parts["unlabelled"] = list(data.unlabelled)
        counts["unlabelled"] = len(data.unlabelled)
    for name, texts in parts.items():
        ids, mask, truncated[name] = text_sources.encode_texts(tokenizer, texts, seq_len, add_eos)
        tensors[f"{name}.x"] = torch.from_numpy(ids)
        tensors[f"{name}.attention_mask"] = torch.from_numpy(mask)
    for name in SPLITS:
        labels = data.labels[np.asarray(splits[name], dtype=np.int64)]
        rows.append(pd.DataFrame({"split": name, "text": parts[name], "label": labels}))
    special = {f"{t.strip('<>')}_id": tokenizer.token_to_id(t) for t in text_sources.SPECIAL_TOKENS}
    info = _info(
        data,
        cfg,
        tensors,
        counts,
        vocab_size=tokenizer.get_vocab_size(),
        seq_len=seq_len,
        add_eos=add_eos,
        special_tokens=list(text_sources.SPECIAL_TOKENS),
        truncated=truncated,
        **special,
    )
    return tensors, info, pd.concat(rows, ignore_index=True)


def summarise_dataset(
    model_input: dict[str, torch.Tensor],
    dataset_info: dict[str, Any],
    label_subsets: dict[str, dict[str, list[int]]],
) -> dict[str, Any]:
    """Small JSON summary: counts per split and class, shapes, subset sizes, content hash."""
    names = dataset_info["class_names"]
    class_counts = {}
    for split in SPLITS:
        counts = torch.bincount(model_input[f"{split}.y"], minlength=len(names)).tolist()
        class_counts[split] = dict(zip(names, counts, strict=True))
    train_y = model_input["train.y"]
    subsets = {}
    for key, by_draw in label_subsets.items():
        per_class = [
            torch.bincount(train_y[torch.as_tensor(rows, dtype=torch.long)], minlength=len(names))
            for rows in by_draw.values()
        ]
        subsets[key] = {
            "size": len(by_draw["0"]),
            "draws": len(by_draw),
            "min_per_class": int(min(int(c.min()) for c in per_class)),
        }
    summary = {
        "modality": dataset_info["modality"],
        "source": dataset_info["source"],
        "content_hash": dataset_info["content_hash"],
        "num_classes": dataset_info["num_classes"],
        "counts": dataset_info["counts"],
        "class_counts": class_counts,
        "label_subsets": subsets,
        "arrays": {
            key: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
            for key, t in sorted(model_input.items())
        },
    }
    if "train.speaker" in model_input:
        speakers = {s: set(model_input[f"{s}.speaker"].tolist()) for s in SPLITS}
        shared = {
            f"{a}_{b}": len(speakers[a] & speakers[b])
            for a, b in (("train", "val"), ("train", "test"), ("val", "test"))
        }
        summary["speakers"] = {s: len(v) for s, v in speakers.items()}
        summary["speakers_shared"] = shared  # speakers in both splits of each pair
        summary["speakers_disjoint"] = not any(shared.values())
    if "truncated" in dataset_info:
        summary["truncated"] = dataset_info["truncated"]
        summary["mean_tokens"] = {
            s: round(float(model_input[f"{s}.attention_mask"].sum(1).float().mean()), 2)
            for s in SPLITS
        }
    return summary
