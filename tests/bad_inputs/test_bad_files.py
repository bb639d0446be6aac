"""Bad files, table-driven: every reader and checkpoint path refuses damaged input loudly.

Each row of :data:`CASES` builds a small real input in a temporary folder (next to a few
earlier artefacts), damages it the way a user's file gets damaged (cut short, zero bytes,
wrong magic, a header that lies, not UTF-8, a cut row, an empty or single-example class,
NaN weights, changed tensor bytes, a broken safetensors header), and runs the real entry
point. Every case asserts three things:

(a) the error type; (b) the message names the damaged file (and, where there is one, the
remedy); (c) every file that existed before is byte-identical afterwards and no
half-written file was left behind (conftest's ``snapshot`` / ``assert_unchanged``).

A damaged *training state* is the one input that must not stop a run: it is moved aside
with a warning and training resumes from the previous checkpoint or from scratch
(:func:`test_damaged_training_state_recovers`).
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from artefact_check import assert_unchanged, snapshot
from kedro.io import DatasetError
from PIL import Image

from d2v_pipeline.data2vec import (
    ImageData2VecConfig,
    ImageEncoderConfig,
    Runtime,
    TrainConfig,
    build_encoder,
    build_pretrain_model,
    config_to_dict,
    pretrain,
)
from d2v_pipeline.data2vec.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointError,
    load_checkpoint,
    previous_path,
)
from d2v_pipeline.datasets import CSVDataset, DamagedArtefactError, EncoderDataset, JSONDataset
from d2v_pipeline.io import CONTENT_HASH_KEY, EncoderWeights, encoder_header, tensors_sha256
from d2v_pipeline.pipelines.finetune.nodes import evaluate_encoder
from d2v_pipeline.sources.image import read_image_folder
from d2v_pipeline.sources.speech import read_wav_folder
from d2v_pipeline.sources.text import read_text_table

REBUILD = "kedro run --namespaces image --pipelines pretrain"
ENC_CFG = ImageEncoderConfig(
    image_size=8, in_channels=1, patch_size=2, dim=16, depth=2, heads=2, ffn_dim=32
)
RATE = 8000  # Hz; clips of 0.1 s keep the speech cases fast


# ---------------------------------------------------------------- builders of good inputs


def _wav_folder(root: Path, per_class: int = 2) -> Path:
    """root/<word>/<speaker>_nohash_0.wav: two words, ``per_class`` real tones each."""
    t = np.arange(int(0.1 * RATE)) / RATE
    for w, word in enumerate(("no", "yes")):
        (root / word).mkdir(parents=True)
        for s in range(per_class):
            tone = 0.5 * np.sin(2 * np.pi * (300 + 200 * w + 50 * s) * t)
            sf.write(root / word / f"spk{s}_nohash_0.wav", tone.astype(np.float32), RATE)
    return root


def _png_folder(root: Path, per_class: int = 2) -> Path:
    """root/<digit>/<n>.png: two classes of 8x8 grey images."""
    rng = np.random.default_rng(0)
    for c in ("0", "1"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(root / c / f"{i}.png")
    return root


def _text_table(path: Path, rows: list[tuple[str, str]] | None = None) -> Path:
    rows = rows or [("a fine film", "pos"), ("loved it", "pos"), ("dull", "neg"), ("bad", "neg")]
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=["sentence", "label"])
    path.write_text(frame.to_csv(index=False), encoding="utf-8")
    return path


def _encoder_file(path: Path, nan: bool = False) -> tuple[Path, dict[str, Any]]:
    """An image encoder written as the pretrain pipeline writes it; returns (file, meta)."""
    torch.manual_seed(0)
    state = {k: v.detach().clone() for k, v in build_encoder(ENC_CFG).state_dict().items()}
    if nan:
        first = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 2)
        state[first][0, 0] = float("nan")
    header = encoder_header("image", "data2vec", config_to_dict(ENC_CFG), REBUILD)
    EncoderDataset(str(path), rebuild=REBUILD).save(EncoderWeights(state, header))
    meta = {
        "method": "data2vec",
        "modality": "image",
        "config": {"encoder": config_to_dict(ENC_CFG)},
        CONTENT_HASH_KEY: tensors_sha256(state),
    }
    return path, meta


def _header_len(raw: bytes) -> int:
    return struct.unpack("<Q", raw[:8])[0]


def _flip_tensor_byte(path: Path) -> None:
    """Change one byte of tensor data (same shapes, same header): only the hash can tell."""
    raw = bytearray(path.read_bytes())
    start = 8 + _header_len(raw)
    raw[start + (len(raw) - start) // 2] ^= 0x40
    path.write_bytes(bytes(raw))


def _break_header(path: Path) -> None:
    """Overwrite bytes inside the JSON header (a disk or copy error in the first block)."""
    raw = bytearray(path.read_bytes())
    raw[8:20] = b"#" * 12
    path.write_bytes(bytes(raw))


def _cut(path: Path, keep: float = 0.5) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


def _digits(n_train: int = 40, n_val: int = 20, n_test: int = 20) -> dict[str, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    n = n_train + n_val + n_test
    x = torch.tensor(d.images[:n], dtype=torch.float32)[:, None]
    x = (x - x.mean()) / x.std()
    y = torch.tensor(d.target[:n], dtype=torch.int64)
    cuts = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    return {f"{s}.{k}": v[a:b] for s, (a, b) in cuts.items() for k, v in (("x", x), ("y", y))}


def _evaluate(encoder_file: Path, meta: dict[str, Any], model_input: dict | None = None) -> Any:
    """The finetune node on the encoder as the catalog loads it (EncoderDataset)."""
    model_input = model_input or _digits()
    params = {
        "fractions": [1.0],
        "seeds": [0],
        "protocols": ["probe_final"],
        "progress": False,
        "probe": {"Cs": [1.0], "max_iter": 50},
        "projection": {"max_points": 10},
    }
    info = {"modality": "image", "num_classes": 10, "class_names": [str(i) for i in range(10)]}
    subsets = {"1.0": list(range(len(model_input["train.y"])))}
    weights = EncoderDataset(str(encoder_file), rebuild=REBUILD).load()
    runtime = {"threads": 1}
    return evaluate_encoder(model_input, subsets, info, weights, meta, params, runtime)


# ---------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    """``make(tmp)`` builds the bad input under ``tmp`` and returns (run, named): ``run()``
    must raise ``error`` with ``named`` (the damaged file or folder) and ``also`` (a remedy,
    a count) in its message."""

    id: str
    make: Callable[[Path], tuple[Callable[[], Any], Path]]
    error: type[BaseException]
    also: tuple[str, ...] = ()


def _speech(damage: Callable[[Path], Path], per_class: int = 2):
    def make(tmp: Path):
        root = _wav_folder(tmp / "wavs", per_class)
        named = damage(root)
        return (lambda: read_wav_folder(root, RATE, 0.1)), named

    return make


def _wav_truncated(root: Path) -> Path:
    f = root / "yes" / "spk1_nohash_0.wav"
    _cut(f, 0.6)  # the header still declares 800 frames
    return f


def _wav_empty(root: Path) -> Path:
    f = root / "no" / "spk0_nohash_0.wav"
    f.write_bytes(b"")
    return f


def _wav_wrong_magic(root: Path) -> Path:
    f = root / "no" / "spk1_nohash_0.wav"
    buf = f.parent / "tmp.png"
    Image.fromarray(np.zeros((4, 4), np.uint8), mode="L").save(buf)
    f.write_bytes(buf.read_bytes())  # a PNG saved under a .wav name
    buf.unlink()
    return f


def _wav_header_lies_more(root: Path) -> Path:
    """The data chunk declares twice the frames it holds (a header patched by a bad tool)."""
    f = root / "yes" / "spk0_nohash_0.wav"
    raw = bytearray(f.read_bytes())
    at = raw.index(b"data") + 4
    size = struct.unpack("<I", raw[at : at + 4])[0]
    raw[at : at + 4] = struct.pack("<I", 2 * size)
    f.write_bytes(bytes(raw))
    return f


def _wav_empty_class(root: Path) -> Path:
    (root / "maybe").mkdir()
    (root / "maybe" / "notes.txt").write_text("no clips here\n")
    return root / "maybe"


def _wav_single_example(root: Path) -> Path:
    (root / "stop").mkdir()
    src = root / "yes" / "spk0_nohash_0.wav"
    (root / "stop" / "spk9_nohash_0.wav").write_bytes(src.read_bytes())
    return root / "stop"


def _image(damage: Callable[[Path], Path]):
    def make(tmp: Path):
        root = _png_folder(tmp / "images")
        named = damage(root)
        return (lambda: read_image_folder(root)), named

    return make


def _png_empty(root: Path) -> Path:
    f = root / "1" / "0.png"
    f.write_bytes(b"")
    return f


def _png_truncated(root: Path) -> Path:
    f = root / "0" / "1.png"
    _cut(f, 0.7)
    return f


def _png_missing_end(root: Path) -> Path:
    """Only the closing IEND chunk is lost: the pixels decode, the file is still cut."""
    f = root / "0" / "0.png"
    f.write_bytes(f.read_bytes()[:-12])
    return f


def _png_flipped_byte(root: Path) -> Path:
    f = root / "1" / "1.png"
    raw = bytearray(f.read_bytes())
    raw[raw.index(b"IDAT") + 8] ^= 0x01  # one bit of compressed pixels: the CRC no longer fits
    f.write_bytes(bytes(raw))
    return f


def _png_wrong_magic(root: Path) -> Path:
    f = root / "1" / "0.png"
    f.write_text("<html>404 Not Found</html>\n")  # what a failed download often saves
    return f


def _image_empty_class(root: Path) -> Path:
    (root / "2").mkdir()
    return root / "2"


def _image_single_example(root: Path) -> Path:
    (root / "2").mkdir()
    (root / "2" / "0.png").write_bytes((root / "0" / "0.png").read_bytes())
    return root / "2"


def _text(damage: Callable[[Path], None]):
    def make(tmp: Path):
        path = _text_table(tmp / "texts" / "reviews.csv")
        damage(path)
        return (lambda: read_text_table(path)), path

    return make


def _text_not_utf8(path: Path) -> None:
    path.write_bytes(path.read_bytes() + "un caf\u00e9 froid,neg\n".encode("latin-1"))


def _text_cut_row(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"this review was cut of")  # no separator, no label


def _text_empty(path: Path) -> None:
    path.write_bytes(b"")


def _text_single_label(path: Path) -> None:
    _text_table(path, [("good", "pos"), ("great", "pos"), ("bad", "neg"), ("poor", "neg"),
                       ("so-so", "mixed")])  # fmt: skip


def _artefact(kind: str):
    """A dataset file written by the project, then cut short on disk, read back."""

    def make(tmp: Path):
        if kind == "csv":
            path = tmp / "out" / "pretrain_history.csv"
            ds: Any = CSVDataset(str(path))
            ds.save(pd.DataFrame({"step": [10, 20, 30], "loss": [1.5, 1.25, 1.125]}))
            path.write_bytes(path.read_bytes()[:-4])
        else:
            path = tmp / "out" / "metadata.json"
            ds = JSONDataset(str(path))
            ds.save({"method": "data2vec", "steps": 30, "config": {"dim": 16}})
            _cut(path, 0.6)
        return ds.load, path

    return make


def _encoder(damage: Callable[[Path], None]):
    def make(tmp: Path):
        path, _ = _encoder_file(tmp / "models" / "encoder.safetensors")
        damage(path)
        return EncoderDataset(str(path), rebuild=REBUILD).load, path

    return make


def _header_length_lies(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[:8] = struct.pack("<Q", len(raw) * 4)
    path.write_bytes(bytes(raw))


def _save_not_tensors(tmp: Path):
    """A failed save must leave the previous encoder file as it was."""
    path, _ = _encoder_file(tmp / "models" / "encoder.safetensors")
    ds = EncoderDataset(str(path), rebuild=REBUILD)
    return (lambda: ds.save({"blocks.0.weight": [1.0, 2.0]})), path


def _train_state_tampered(tmp: Path):
    """A training checkpoint with changed tensor bytes, read directly (no fallback here)."""
    path = tmp / "state" / CHECKPOINT_FILE
    _pretrain(tmp / "state", steps=4)
    _flip_tensor_byte(path)
    return (lambda: load_checkpoint(path)), path


def _finetune_nan_weights(tmp: Path):
    path, meta = _encoder_file(tmp / "models" / "encoder.safetensors", nan=True)
    return (lambda: _evaluate(path, meta)), path


def _finetune_inf_features(tmp: Path):
    """Finite weights, but an input with inf: the features are not finite."""
    path, meta = _encoder_file(tmp / "models" / "encoder.safetensors")
    model_input = _digits()
    model_input["val.x"] = model_input["val.x"].clone()
    model_input["val.x"][3, 0, 2, 2] = float("inf")
    return (lambda: _evaluate(path, meta, model_input)), path


def _finetune_meta_of_other_run(tmp: Path):
    path, meta = _encoder_file(tmp / "models" / "encoder.safetensors")
    meta = {**meta, CONTENT_HASH_KEY: "0" * 64}  # metadata.json of another run
    return (lambda: _evaluate(path, meta)), path


CASES = [
    # speech readers
    Case("wav-truncated", _speech(_wav_truncated), ValueError, ("declares 800 frames", "holds")),
    Case("wav-header-lies", _speech(_wav_header_lies_more), ValueError, ("1600 frames",)),
    Case("wav-zero-length", _speech(_wav_empty), ValueError, ("0 bytes",)),
    Case("wav-wrong-magic", _speech(_wav_wrong_magic), ValueError, ("not",)),
    Case("wav-empty-class", _speech(_wav_empty_class), ValueError, ("no .wav files",)),
    Case("wav-single-example", _speech(_wav_single_example), ValueError, ("single example",)),
    # image readers
    Case("png-zero-length", _image(_png_empty), ValueError, ("0 bytes",)),
    Case("png-truncated", _image(_png_truncated), ValueError, ("not a readable image",)),
    Case("png-missing-end", _image(_png_missing_end), ValueError, ("truncated",)),
    Case("png-flipped-byte", _image(_png_flipped_byte), ValueError, ("not a readable image",)),
    Case("png-wrong-magic", _image(_png_wrong_magic), ValueError, ("not a readable image",)),
    Case("image-empty-class", _image(_image_empty_class), ValueError, ("no images",)),
    Case("image-single-example", _image(_image_single_example), ValueError, ("single example",)),
    # text reader
    Case("text-not-utf8", _text(_text_not_utf8), ValueError, ("line 6", "UTF-8")),
    Case("text-cut-row", _text(_text_cut_row), ValueError, ("line 6", "1 field(s)")),
    Case("text-zero-length", _text(_text_empty), ValueError, ("empty",)),
    Case("text-single-label", _text(_text_single_label), ValueError, ("'mixed'",)),
    # artefacts read back by the catalog
    Case("csv-artefact-cut", _artefact("csv"), DamagedArtefactError, ("Rebuild it",)),
    Case("json-artefact-cut", _artefact("json"), DamagedArtefactError, ("Rebuild it",)),
    # encoder files (safetensors)
    Case(
        "encoder-tampered-bytes",
        _encoder(_flip_tensor_byte),
        DamagedArtefactError,
        (CONTENT_HASH_KEY, REBUILD),
    ),
    Case("encoder-damaged-header", _encoder(_break_header), DamagedArtefactError, (REBUILD,)),
    Case(
        "encoder-header-length-lies",
        _encoder(_header_length_lies),
        DamagedArtefactError,
        (REBUILD,),
    ),
    Case(
        "encoder-zero-length",
        _encoder(lambda p: p.write_bytes(b"")),
        DamagedArtefactError,
        ("0 bytes", REBUILD),
    ),
    Case("encoder-truncated", _encoder(_cut), DamagedArtefactError, (REBUILD,)),
    Case("encoder-save-not-tensors", _save_not_tensors, DatasetError, ("torch tensors",)),
    # training state, read directly
    Case("train-state-tampered", _train_state_tampered, CheckpointError, (CONTENT_HASH_KEY,)),
    # the finetune node, on the encoder file the catalog loaded
    Case("finetune-nan-weights", _finetune_nan_weights, FloatingPointError, ("NaN/inf", REBUILD)),
    Case(
        "finetune-inf-features",
        _finetune_inf_features,
        FloatingPointError,
        ("NaN/inf", "val split"),
    ),
    Case(
        "finetune-meta-other-run",
        _finetune_meta_of_other_run,
        ValueError,
        ("metadata.json", REBUILD),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_file_is_refused_by_name_and_nothing_changes(case: Case, tmp_path: Path, artefacts):
    run, named = case.make(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(case.error) as caught:
        run()
    message = str(caught.value)
    assert str(named) in message, message
    for text in case.also:
        assert text in message, message
    assert_unchanged(before, tmp_path)


def test_the_table_is_large_and_ids_are_unique():
    assert len(CASES) >= 20
    assert len({c.id for c in CASES}) == len(CASES)


# ---------------------------------------------------------------- damaged training state


def _pretrain(state_dir: Path | None, steps: int = 10, every: int = 5) -> Any:
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().images[:64], dtype=torch.float32).unsqueeze(1)
    x = (x - x.mean()) / x.std()
    model = build_pretrain_model(
        "data2vec",
        ENC_CFG,
        ImageData2VecConfig(ema_decay=0.99, ema_end_decay=0.999, ema_anneal_end_step=10),
        seed=3,
    )
    cfg = TrainConfig(
        steps=steps, batch_size=16, lr=2e-3, seed=3, log_every=5,
        checkpoint_every=every,
    )  # fmt: skip
    one_thread = Runtime(threads=1)
    return pretrain(
        model, {"x": x}, cfg, checkpoint_dir=state_dir, progress=False, runtime=one_thread
    )


DAMAGES = {
    "garbage": lambda p: p.write_bytes(b"not a checkpoint"),
    "zero-length": lambda p: p.write_bytes(b""),
    "truncated": _cut,
    "tampered-bytes": _flip_tensor_byte,
    "damaged-header": _break_header,
}


@pytest.mark.parametrize("damage", list(DAMAGES), ids=list(DAMAGES))
def test_damaged_training_state_recovers(damage: str, tmp_path: Path, caplog):
    """The newest checkpoint is damaged: it is moved aside with a warning naming it, the
    previous one (step 5) is resumed, and the run finishes with exactly the weights of an
    undisturbed run (resumption is bitwise exact)."""
    state = tmp_path / "state"
    clean = _pretrain(None)
    _pretrain(state)
    ckpt = state / CHECKPOINT_FILE
    DAMAGES[damage](ckpt)
    damaged_bytes = ckpt.read_bytes()
    with caplog.at_level(logging.WARNING):
        result = _pretrain(state)
    aside = state / "checkpoint.damaged-1.safetensors"
    assert aside.read_bytes() == damaged_bytes  # kept for inspection, not deleted
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(str(ckpt) in w and str(aside) in w for w in warnings), warnings
    assert result.resumed_from_step == 5 and result.steps == 10
    for name, tensor in clean.encoder_state.items():
        assert torch.equal(result.encoder_state[name], tensor), name
    _, meta = load_checkpoint(ckpt)  # a good newest checkpoint again
    assert meta["step"] == 10


def test_both_training_checkpoints_damaged_restarts_from_scratch(tmp_path: Path, caplog):
    state = tmp_path / "state"
    clean = _pretrain(None)
    _pretrain(state)
    ckpt = state / CHECKPOINT_FILE
    _flip_tensor_byte(ckpt)
    previous_path(ckpt).write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        result = _pretrain(state)
    assert result.resumed_from_step is None and result.steps == 10
    moved = sorted(p.name for p in state.glob("checkpoint.damaged-*.safetensors"))
    assert moved == ["checkpoint.damaged-1.safetensors", "checkpoint.damaged-2.safetensors"]
    assert "training restarts from step 0" in caplog.text
    for name, tensor in clean.encoder_state.items():
        assert torch.equal(result.encoder_state[name], tensor), name


# ---------------------------------------------------------------- not errors, but reported


def test_a_label_that_looks_like_a_typo_is_kept_and_reported(tmp_path: Path, caplog):
    rows = [(f"good film {i}", "positive") for i in range(30)]
    rows += [(f"bad film {i}", "negative") for i in range(30)]
    rows += [("fine film", "postive"), ("nice film", "postive")]  # a typo, twice
    path = _text_table(tmp_path / "reviews.csv", rows)
    with caplog.at_level(logging.WARNING):
        data = read_text_table(path)
    assert data.class_names == ["negative", "positive", "postive"]
    assert [(s["label"], s["similar_to"]) for s in data.suspect_labels] == [("postive", "positive")]
    assert "'postive'" in caplog.text and "typo" in caplog.text and str(path) in caplog.text


def test_an_encoder_file_describes_itself_to_a_plain_safetensors_reader(tmp_path: Path):
    """Five lines outside the project's loaders rebuild the encoder from the file alone."""
    from safetensors import safe_open

    from d2v_pipeline.data2vec import load_encoder

    path, meta = _encoder_file(tmp_path / "encoder.safetensors")
    with safe_open(str(path), framework="pt") as f:
        header, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    encoder = load_encoder(json.loads(header["encoder_config"]), tensors, header["modality"])
    assert header[CONTENT_HASH_KEY] == tensors_sha256(tensors) == meta[CONTENT_HASH_KEY]
    assert header["rebuild"] == REBUILD
    assert encoder.depth == ENC_CFG.depth


def test_an_encoder_saved_without_a_hash_still_loads_with_a_warning(tmp_path: Path, caplog):
    """Encoders written before the hash existed (the committed default results) load."""
    from safetensors.torch import save_file

    state = build_encoder(ENC_CFG).state_dict()
    path = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))  # as a1faa54 wrote
    with caplog.at_level(logging.WARNING):
        loaded = EncoderDataset(str(path), rebuild=REBUILD).load()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert CONTENT_HASH_KEY in caplog.text and str(path) in caplog.text
