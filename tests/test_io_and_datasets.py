"""Atomic writes and the project's Kedro datasets: round trips, and failures that lose nothing."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch
from kedro.io import DatasetError

from d2v_pipeline.datasets import (
    CSVDataset,
    DirectoryDataset,
    FiguresDataset,
    JSONDataset,
    TensorDictDataset,
    TextDataset,
    YAMLDataset,
)
from d2v_pipeline.io import atomic_path, atomic_write, sha256_bytes, sha256_file


def test_atomic_write_replaces_content(tmp_path):
    target = tmp_path / "a" / "b.txt"
    atomic_write(target, "first")
    atomic_write(target, b"second")
    assert target.read_text() == "second"
    assert sha256_file(target) == sha256_bytes(b"second")
    assert [p.name for p in target.parent.iterdir()] == ["b.txt"]  # no temp files left


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "x.json"
    atomic_write(target, '{"ok": 1}')

    def broken_writer(fh):
        fh.write(b'{"partial": ')
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(target, broken_writer)
    assert json.loads(target.read_text()) == {"ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_atomic_path_does_not_create_target_on_error(tmp_path):
    target = tmp_path / "never.bin"
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise ValueError("stop")
    assert not target.exists()


def test_tensor_dict_round_trip_and_bad_input(tmp_path):
    ds = TensorDictDataset(filepath=str(tmp_path / "t.safetensors"))
    data = {"train.x": torch.randn(3, 1, 4, 4), "train.y": torch.tensor([0, 1, 2])}
    ds.save(data)
    back = ds.load()
    assert set(back) == set(data)
    assert all(torch.equal(back[k], data[k]) for k in data)
    with pytest.raises(DatasetError, match="dict of torch tensors"):
        ds.save({"x": [1, 2, 3]})
    assert torch.equal(ds.load()["train.y"], data["train.y"])  # previous file intact


def test_missing_file_error_names_the_path(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(DatasetError, match=r"nope\.json"):
        JSONDataset(filepath=str(path)).load()


def test_remote_paths_are_rejected_with_a_clear_error():
    with pytest.raises(DatasetError, match="only local paths"):
        JSONDataset(filepath="s3://bucket/x.json")


def test_json_yaml_csv_text_round_trips(tmp_path):
    JSONDataset(filepath=str(tmp_path / "a.json")).save({"b": 1, "a": [1.5, "x"]})
    assert JSONDataset(filepath=str(tmp_path / "a.json")).load() == {"a": [1.5, "x"], "b": 1}
    YAMLDataset(filepath=str(tmp_path / "p.yml")).save({"image": {"lr": 0.001}})
    assert YAMLDataset(filepath=str(tmp_path / "p.yml")).load() == {"image": {"lr": 0.001}}
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    CSVDataset(filepath=str(tmp_path / "t.csv")).save(df)
    pd.testing.assert_frame_equal(CSVDataset(filepath=str(tmp_path / "t.csv")).load(), df)
    TextDataset(filepath=str(tmp_path / "r.html")).save("<p>é</p>")
    assert TextDataset(filepath=str(tmp_path / "r.html")).load() == "<p>é</p>"


def test_figures_folder_is_replaced_as_a_whole(tmp_path):
    ds = FiguresDataset(filepath=str(tmp_path / "figs"))
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    ds.save({"one": fig})
    assert set(ds.load()) == {"one"}

    class NotAFigure:
        def savefig(self, *a, **k):
            raise RuntimeError("cannot render")

    fig2, _ = plt.subplots()
    with pytest.raises(DatasetError, match="Failed while saving"):  # Kedro wraps the error
        ds.save({"two": fig2, "three": NotAFigure()})
    assert set(ds.load()) == {"one"}  # the old folder survives a failed save
    assert [p.name for p in tmp_path.iterdir()] == ["figs"]


def test_directory_dataset_returns_a_created_folder(tmp_path):
    ds = DirectoryDataset(filepath=str(tmp_path / "state" / "image"))
    path = ds.load()
    assert path.is_dir()
    with pytest.raises(DatasetError, match="read-only"):
        ds.save(1)


def test_atomic_files_get_the_usual_permissions(tmp_path):
    target = atomic_write(tmp_path / "r.html", "<p>x</p>")
    mode = target.stat().st_mode & 0o777
    assert mode & 0o044 == 0o044  # group/other can read, as with a plain open()


def test_json_missing_ok_returns_default(tmp_path):
    ds = JSONDataset(filepath=str(tmp_path / "t.json"), missing_ok=True, default={})
    assert ds.load() == {}
    ds.save({"a": 1})
    assert ds.load() == {"a": 1}
