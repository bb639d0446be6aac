"""Atomic writes and the project's Kedro datasets: round trips, and failures that lose nothing."""

from __future__ import annotations

import base64
import json
from typing import Any

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


def test_csv_missing_ok_returns_default_and_still_names_a_missing_file(tmp_path):
    path = tmp_path / "eval_metrics.csv"
    assert CSVDataset(filepath=str(path), missing_ok=True).load() is None
    ds = CSVDataset(filepath=str(path), missing_ok=True)
    ds.save(pd.DataFrame({"a": [1]}))
    assert ds.load()["a"].tolist() == [1]
    with pytest.raises(DatasetError, match=r"eval_metrics\.csv does not exist"):
        CSVDataset(filepath=str(tmp_path / "other" / "eval_metrics.csv")).load()


def test_partial_report_inputs_are_missing_ok_in_the_catalog(project_root):
    """The datasets the report reads last load as None when their stage has not run."""
    from kedro.config import OmegaConfigLoader
    from kedro.io import DataCatalog

    conf = OmegaConfigLoader(str(project_root / "conf"), base_env="base", default_run_env="base")
    catalog = DataCatalog.from_config(conf["catalog"])
    from d2v_pipeline.pipelines.report.pipeline import lane_input_names

    # every lane dataset the report pipeline reads (its own list: a new input is checked too)
    names = [f"image.{d}" for d in lane_input_names(("data2vec",))]
    assert {"image.test_predictions", "image.data2vec.pretrain_meta"} <= set(names)
    assert [n for n in names if not catalog.get(n)._missing_ok] == []
    assert [n for n in names if catalog.get(n)._default is not None] == []  # load as None
    # what the other stages hand over stays required: a missing file is an error there
    assert not catalog.get("image.dataset_info")._missing_ok
    assert not catalog.get("image.data2vec.method_metrics")._missing_ok


def _viz_metadata(name: str, dataset) -> Any:
    """What Kedro-Viz's own model shows for a dataset node (preview + preview type)."""
    from kedro_viz.models.flowchart.node_metadata import DataNodeMetadata
    from kedro_viz.models.flowchart.nodes import GraphNode

    node = GraphNode.create_data_node(
        dataset_id=name,
        dataset_name=name,
        layer="reporting",
        tags=set(),
        dataset=dataset,
        modular_pipelines=None,
    )
    return DataNodeMetadata(data_node=node)


def test_kedro_viz_previews_tables_json_and_one_figure(tmp_path):
    table = CSVDataset(
        filepath=str(tmp_path / "t.csv"),
        metadata={"kedro-viz": {"layer": "reporting", "preview_args": {"nrows": 2}}},
    )
    table.save(pd.DataFrame({"method": ["a", "b", "c"], "acc": [0.5, float("nan"), 0.7]}))
    meta = _viz_metadata("label_efficiency", table)
    assert meta.preview_type == "TablePreview"
    assert meta.preview["columns"] == ["method", "acc"]
    assert meta.preview["data"] == [["a", 0.5], ["b", None]]  # first rows; NaN as null

    doc = JSONDataset(filepath=str(tmp_path / "d.json"))
    doc.save({"train": list(range(100)), "n": 3})
    meta = _viz_metadata("image.splits", doc)
    assert meta.preview_type == "JSONPreview"
    shown = json.loads(meta.preview)
    assert shown["n"] == 3 and shown["train"][:10] == list(range(10))
    assert shown["train"][10] == "... 90 more"

    figs = FiguresDataset(
        filepath=str(tmp_path / "figs"),
        metadata={"kedro-viz": {"preview_args": {"figure": ["missing", "second"]}}},
    )
    fig_a, _ = plt.subplots(figsize=(1, 1))
    fig_b, _ = plt.subplots(figsize=(2, 1))
    figs.save({"first": fig_a, "second": fig_b})
    meta = _viz_metadata("report_figures", figs)
    assert meta.preview_type == "ImagePreview"
    png = base64.b64decode(meta.preview)
    assert png == (tmp_path / "figs" / "second.png").read_bytes()  # the one asked for

    # not written yet: no preview, and no error for Kedro-Viz to log
    assert CSVDataset(filepath=str(tmp_path / "no.csv")).preview() is None
    assert JSONDataset(filepath=str(tmp_path / "no.json")).preview() is None
    assert FiguresDataset(filepath=str(tmp_path / "nofigs")).preview() is None
