"""Speech sources: forked espeak-ng synthesis (loudness, placement, balance, determinism,
cache) and the Speech Commands style WAV folder reader (resampling, downmix, bad files)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from d2v_pipeline.pipelines.ingest.nodes import load_speech_source, split_dataset
from d2v_pipeline.sources.speech import (
    SynthesisConfig,
    load_or_synthesize,
    plan_clips,
    read_wav_folder,
    synthesize_keywords,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TINY = SynthesisConfig(
    words=("yes", "no", "seven"),
    accents=("en-us", "en-gb-scotland"),
    variants=("m1", "f4"),
    repeats=2,
    seed=3,
)


@pytest.fixture(scope="module")
def tiny_set():
    return synthesize_keywords(TINY, workers=2, progress=False)


def _dbfs(x: np.ndarray) -> np.ndarray:
    return 20 * np.log10(np.maximum(x, 1e-12))


def test_synthesis_shapes_and_class_balance(tiny_set):
    n = 3 * 2 * 2 * 2
    assert tiny_set.audio.shape == (n, 16_000) and tiny_set.audio.dtype == np.int16
    assert np.bincount(tiny_set.labels).tolist() == [8, 8, 8]
    assert np.bincount(tiny_set.speakers).tolist() == [6, 6, 6, 6]
    assert tiny_set.speaker_names == [
        "en-us+m1",
        "en-us+f4",
        "en-gb-scotland+m1",
        "en-gb-scotland+f4",
    ]
    assert tiny_set.class_names == ["yes", "no", "seven"]


def test_synthesis_loudness_and_placement(tiny_set):
    x = tiny_set.audio.astype(np.float64) / 32768
    plans = plan_clips(TINY)
    peaks = _dbfs(np.abs(x).max(axis=1))
    wanted = np.array([p.peak_dbfs for p in plans])
    # peak = word peak + noise, so within a fraction of a dB of the drawn level
    assert np.all(np.abs(peaks - wanted) < 1.0), (peaks, wanted)
    # the quietest 50 ms is background noise near its drawn RMS level, not digital silence
    frames = x.reshape(len(x), -1, 800)
    floor = _dbfs(np.sqrt((frames**2).mean(axis=2)).min(axis=1))
    drawn = np.array([p.noise_dbfs for p in plans])
    assert np.all(np.abs(floor - drawn) < 3.0), (floor, drawn)
    # every clip holds a word clearly above the noise (SNR is random by design: noise up to
    # -30 dBFS under a peak down to -12 dBFS)
    energy = _dbfs(np.sqrt((frames**2).mean(axis=2)))
    assert np.all(energy.max(axis=1) > floor + 6) and np.median(energy.max(axis=1) - floor) > 15
    # the word sits at a random offset: onsets (first frame 6 dB over the floor) vary
    onsets = np.argmax(energy > floor[:, None] + 6, axis=1)
    assert len(set(onsets.tolist())) > len(x) // 3


def test_synthesis_is_bit_identical_on_rerun(tiny_set):
    again = synthesize_keywords(TINY, workers=1, progress=False)
    np.testing.assert_array_equal(again.audio, tiny_set.audio)


def test_breath_and_unknown_voices_are_refused():
    with pytest.raises(ValueError, match="breath"):
        synthesize_keywords(replace(TINY, variants=("m1", "whisper")), progress=False)
    with pytest.raises(ValueError, match="nosuchvariant"):
        synthesize_keywords(replace(TINY, variants=("nosuchvariant",)), progress=False)
    with pytest.raises(ValueError, match="xx-nowhere"):
        synthesize_keywords(replace(TINY, accents=("xx-nowhere",)), progress=False)


def test_cache_is_reused_and_keyed_by_parameters(tmp_path, caplog):
    cfg = replace(TINY, words=("go",), accents=("en",), variants=("m2",), repeats=1)
    first = load_or_synthesize(cfg, tmp_path, progress=False)
    audio_file = tmp_path / "clips.safetensors"
    stamp = audio_file.stat().st_mtime_ns
    meta = json.loads((tmp_path / "clips.json").read_text())
    assert meta["generation_parameters"]["words"] == ["go"] and meta["num_clips"] == 1
    with caplog.at_level(logging.INFO, logger="d2v_pipeline.sources.speech"):
        second = load_or_synthesize(cfg, tmp_path, progress=False)
    assert "reusing" in caplog.text
    assert audio_file.stat().st_mtime_ns == stamp  # not rewritten
    np.testing.assert_array_equal(second.audio, first.audio)
    assert second.speaker_names == first.speaker_names

    changed = load_or_synthesize(replace(cfg, seed=cfg.seed + 1), tmp_path, progress=False)
    assert json.loads((tmp_path / "clips.json").read_text())["params_hash"] != meta["params_hash"]
    assert not np.array_equal(changed.audio, first.audio)


def test_damaged_cache_is_regenerated(tmp_path):
    cfg = replace(TINY, words=("go",), accents=("en",), variants=("m2",), repeats=1)
    first = load_or_synthesize(cfg, tmp_path, progress=False)
    (tmp_path / "clips.safetensors").write_bytes(b"truncated")
    again = load_or_synthesize(cfg, tmp_path, progress=False)
    np.testing.assert_array_equal(again.audio, first.audio)


def _wav_folder(root, tiny_set):
    """Speech Commands layout from real synthesised clips, in awkward formats."""
    for word in tiny_set.class_names:
        (root / word).mkdir(parents=True)
    (root / "_background_noise_").mkdir()
    sf.write(root / "_background_noise_" / "noise.wav", np.zeros(100), 16_000)
    for i, (clip, label, spk) in enumerate(
        zip(tiny_set.audio, tiny_set.labels, tiny_set.speakers, strict=True)
    ):
        folder = root / tiny_set.class_names[label]
        x = clip.astype(np.float32) / 32768
        if i % 3 == 0:  # 8 kHz stereo: needs resampling and a downmix
            mono = x[::2]
            sf.write(folder / f"spk{spk}_nohash_{i}.wav", np.stack([mono, mono], 1), 8_000)
        elif i % 3 == 1:  # 44.1 kHz, 1.5 s: resampled then centre-cropped
            up = np.repeat(x, 3)[:66_150]
            sf.write(folder / f"spk{spk}_nohash_{i}.wav", np.pad(up, (0, 66_150 - len(up))), 44_100)
        else:  # 16 kHz, 0.5 s: zero-padded
            sf.write(folder / f"free_name_{i}.wav", x[:8_000], 16_000, subtype="PCM_16")


def test_wav_folder_resamples_downmixes_and_parses_speakers(tmp_path, tiny_set):
    _wav_folder(tmp_path, tiny_set)
    data = read_wav_folder(tmp_path)
    assert data.audio.shape == (len(tiny_set.audio), 16_000) and data.audio.dtype == np.float32
    assert data.class_names == sorted(tiny_set.class_names)
    assert np.bincount(data.labels).tolist() == [8, 8, 8]
    named = [n for n in data.speaker_names if n.startswith("spk")]
    assert sorted(named) == [f"spk{s}" for s in range(4)]  # from <speaker>_nohash_<n>.wav
    assert any("free_name" in n for n in data.speaker_names)  # other files: own speaker
    assert np.abs(data.audio).max() <= 1.0 and np.abs(data.audio).max() > 0.1
    padded = [i for i, n in enumerate(data.speaker_names) if "free_name" in n]
    rows = np.isin(data.speakers, padded)
    assert np.all(data.audio[rows, 8_000:] == 0)  # short clips padded at the end


def test_wav_folder_splits_hold_out_disjoint_speakers(tmp_path, tiny_set):
    """The folder reader's speakers drive ingest's group split: train, val and test share no
    speaker, and each split still has every word."""
    _wav_folder(tmp_path / "words", tiny_set)
    conf = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_ingest.yml").read_text())
    params = {**conf["speech"]["ingest"], "source": "folder"}
    params["folder"] = {"root": str(tmp_path / "words")}
    data = load_speech_source(params)
    splits = split_dataset(data, params)
    names = {n: {data.speaker_names[s] for s in data.speakers[splits[n]]} for n in splits}
    assert all(names.values())
    assert not names["train"] & names["val"]
    assert not names["train"] & names["test"]
    assert not names["val"] & names["test"]
    for rows in splits.values():
        assert set(data.labels[rows].tolist()) == {0, 1, 2}
    assert sorted(i for rows in splits.values() for i in rows) == list(range(len(data)))


def test_wav_folder_bad_inputs_are_named(tmp_path, tiny_set):
    with pytest.raises(FileNotFoundError, match="missing"):
        read_wav_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="empty"):
        read_wav_folder(tmp_path)
    (tmp_path / "yes").mkdir()
    with pytest.raises(ValueError, match=r"yes: class folder has no \.wav"):
        read_wav_folder(tmp_path)
    clip = tiny_set.audio[0].astype(np.float32) / 32768
    sf.write(tmp_path / "yes" / "a_nohash_0.wav", clip, 16_000)
    (tmp_path / "yes" / "corrupt_nohash_0.wav").write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(ValueError, match=r"corrupt_nohash_0\.wav: not a readable WAV"):
        read_wav_folder(tmp_path)
    (tmp_path / "yes" / "corrupt_nohash_0.wav").unlink()
    sf.write(tmp_path / "yes" / "flac_nohash_0.wav", clip, 16_000, format="FLAC")
    with pytest.raises(ValueError, match=r"flac_nohash_0\.wav: is a FLAC file, not WAV"):
        read_wav_folder(tmp_path)
