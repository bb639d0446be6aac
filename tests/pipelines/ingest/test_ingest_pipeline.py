"""The ingest pipeline's wiring, and a real `kedro run --env smoke --pipelines ingest`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file
from tokenizers import Tokenizer

from d2v_pipeline.pipelines.ingest import create_pipeline

PROJECT_ROOT = Path(__file__).resolve().parents[3]
MODALITIES = ("image", "speech", "text")
COMMON_NODES = {"load_source", "split_dataset", "build_model_input"}
COMMON_NODES |= {"make_label_subsets", "summarise_dataset"}


def test_one_namespaced_lane_per_modality():
    pipeline = create_pipeline()
    names = {node.name for node in pipeline.nodes}
    expected = {f"{m}.{n}" for m in MODALITIES for n in COMMON_NODES} | {"text.train_tokenizer"}
    assert names == expected
    outputs = pipeline.all_outputs()
    for m in MODALITIES:
        for dataset in ("model_input", "label_subsets", "dataset_info", "dataset_summary"):
            assert f"{m}.{dataset}" in outputs
        assert pipeline.only_nodes_with_namespaces([m]).inputs() == {f"params:{m}.ingest"}
    assert {"text.tokenizer", "text.texts"} <= outputs


def _kedro(project: Path, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kedro", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "PYTHONWARNINGS": "ignore"},
    )
    if proc.returncode != 0:
        pytest.fail(f"kedro {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_kedro_smoke_run_writes_the_data_contract(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy2(PROJECT_ROOT / "pyproject.toml", project)
    shutil.copytree(PROJECT_ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    (project / "src").mkdir()  # kedro insists on the source dir; the package is installed
    _kedro(project, "run", "--env", "smoke", "--pipelines", "ingest")

    data = project / "data" / "smoke"  # conf/smoke/globals.yml data_root
    hashes = {}
    for m in MODALITIES:
        arrays = load_file(data / "05_model_input" / m / "arrays.safetensors")
        info = _json(data / "05_model_input" / m / "dataset_info.json")
        subsets = _json(data / "05_model_input" / m / "label_subsets.json")
        summary = _json(data / "08_reporting" / m / "dataset_summary.json")
        for split in ("train", "val", "test"):
            assert (
                arrays[f"{split}.y"].shape[0]
                == arrays[f"{split}.x"].shape[0]
                == (info["counts"][split])
            )
            assert int(arrays[f"{split}.y"].max()) < info["num_classes"]
        assert list(arrays["train.x"].shape[1:]) == info["input_shape"]
        assert set(subsets) == {"0.01", "0.1", "1.0"}
        for draw in subsets["0.01"]:
            assert (
                set(subsets["0.01"][draw]) <= set(subsets["0.1"][draw]) <= set(subsets["1.0"][draw])
            )
        assert summary["content_hash"] == info["content_hash"]
        hashes[m] = info["content_hash"]
    assert _json(data / "05_model_input" / "image" / "dataset_info.json")["counts"]["train"] == 420
    speech = load_file(data / "05_model_input" / "speech" / "arrays.safetensors")
    assert "train.speaker" in speech and speech["train.x"].shape[1] == 16_000
    speakers = {s: set(speech[f"{s}.speaker"].tolist()) for s in ("train", "val", "test")}
    assert all(speakers.values()) and not (speakers["train"] & speakers["val"])
    summary = _json(data / "08_reporting" / "speech" / "dataset_summary.json")
    assert summary["speakers_disjoint"] is True
    assert summary["speakers"] == {s: len(v) for s, v in speakers.items()}
    clips = data / "01_raw" / "speech" / "clips.safetensors"
    synthesised_at = clips.stat().st_mtime_ns
    tokenizer = Tokenizer.from_str(
        (data / "05_model_input" / "text" / "tokenizer.json").read_text()
    )
    assert tokenizer.token_to_id("<mask>") == 2
    texts = pd.read_csv(data / "05_model_input" / "text" / "texts.csv")
    assert list(texts["split"].unique()) == ["train", "val", "test"]

    # a second run with another image seed: image changes, the others are reproduced
    # exactly and the speech synthesis comes from the cache
    _kedro(
        project, "run", "--env", "smoke", "--pipelines", "ingest", "--params", "image.ingest.seed=1"
    )
    assert clips.stat().st_mtime_ns == synthesised_at
    for m in MODALITIES:
        info = _json(data / "05_model_input" / m / "dataset_info.json")
        assert (info["content_hash"] == hashes[m]) == (m != "image"), m
