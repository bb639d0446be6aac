"""The encoder file the pretrain pipeline writes: self-describing, hash-checked, weights
untouched, and its catalog entry names the command that rebuilds it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from kedro.io import DataCatalog

from d2v_pipeline.data2vec import build_encoder, load_encoder
from d2v_pipeline.datasets import DamagedArtefactError
from d2v_pipeline.io import CONTENT_HASH_KEY, tensors_sha256
from d2v_pipeline.pipelines.pretrain.nodes import _configs, init_scratch_encoder

PROJECT_ROOT = Path(__file__).resolve().parents[3]
INFO = {"modality": "image", "input_shape": [1, 8, 8], "content_hash": "abc"}
PARAMS = {
    "encoder": {"patch_size": 2, "dim": 16, "depth": 2, "heads": 2, "ffn_dim": 32},
    "train": {"seed": 5},
}


def _catalog(tmp_path: Path) -> DataCatalog:
    """conf/base/catalog_pretrain.yml with the data root pointed at ``tmp_path``."""
    text = (PROJECT_ROOT / "conf" / "base" / "catalog_pretrain.yml").read_text()
    conf = yaml.safe_load(text.replace("${globals:data_root}", str(tmp_path)))
    return DataCatalog.from_config(conf)


def test_scratch_encoder_round_trips_through_the_catalog_with_its_header(tmp_path):
    weights, meta = init_scratch_encoder(INFO, PARAMS)
    enc_cfg, _, _ = _configs("scratch", INFO, PARAMS)
    torch.manual_seed(5)
    expected = build_encoder(enc_cfg).state_dict()  # the tensors are not changed, only described
    assert all(torch.equal(weights[k], v) for k, v in expected.items())
    assert meta[CONTENT_HASH_KEY] == tensors_sha256(expected)

    catalog = _catalog(tmp_path)
    catalog.save("image.scratch.encoder", weights)
    path = tmp_path / "06_models" / "image" / "scratch" / "encoder.safetensors"
    assert path.stat().st_mode & 0o777 == 0o644
    loaded = catalog.load("image.scratch.encoder")
    assert loaded.path == path
    assert loaded.header[CONTENT_HASH_KEY] == meta[CONTENT_HASH_KEY]
    assert loaded.header["rebuild"] == "kedro run --namespaces image --pipelines pretrain"
    encoder = load_encoder(json.loads(loaded.header["encoder_config"]), loaded, "image")
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in expected.items())


def test_catalog_names_the_namespaced_rebuild_command_for_a_damaged_encoder(tmp_path):
    catalog = _catalog(tmp_path)
    weights, _ = init_scratch_encoder(INFO, PARAMS)
    catalog.save("image.data2vec.encoder", weights)
    path = tmp_path / "06_models" / "image" / "data2vec" / "encoder.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x10  # one weight changes, the shapes do not
    path.write_bytes(bytes(raw))
    with pytest.raises(Exception) as caught:
        catalog.load("image.data2vec.encoder")
    err = caught.value
    while err is not None and not isinstance(err, DamagedArtefactError):
        err = err.__cause__
    assert isinstance(err, DamagedArtefactError), caught.value
    assert str(path) in str(caught.value)
    assert "kedro run --namespaces image --pipelines pretrain" in str(caught.value)
