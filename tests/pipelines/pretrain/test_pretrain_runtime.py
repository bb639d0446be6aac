"""The runtime block in the pretrain lane: one ``params:<m>.runtime`` input per training node,
a run key that follows what is learned (precision) and not where it runs (device, processes,
threads, compile), and the same rule in dvc.yaml's params."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from d2v_pipeline.data2vec.config_base import ConfigError
from d2v_pipeline.pipelines.pretrain import create_pipeline
from d2v_pipeline.pipelines.pretrain.nodes import plan_pretraining

PROJECT_ROOT = Path(__file__).resolve().parents[3]
MODALITIES = ("image", "speech", "text")
INFO = {"modality": "image", "input_shape": [1, 8, 8], "content_hash": "abc"}
PARAMS = {
    "state_dir": "state",
    "encoder": {"patch_size": 2, "dim": 16, "depth": 2, "heads": 2, "ffn_dim": 32},
    "train": {"steps": 6, "batch_size": 16},
    "data2vec": {"top_k": 2},
}
# where and how a run executes: none of these may change the run key
EXECUTION = {
    "device": ["cpu", "auto"],
    "nproc_per_node": [1, 4],
    "threads": [None, 1, 2],
    "compile": [False, True],
    "workers": [0, 2],
    "timeout_s": [120.0, 30.0],
}


def test_every_training_node_reads_its_lanes_runtime_block():
    pipeline = create_pipeline()
    for m in MODALITIES:
        lane = pipeline.only_nodes_with_namespaces([m])
        readers = {n.name for n in lane.nodes if f"params:{m}.runtime" in n.inputs}
        methods = ("data2vec", "data2vec2", "masked_recon")
        assert readers == {f"{m}.pretrain_{x}" for x in methods}  # scratch is only initialised
        assert not any(
            i.endswith(".runtime") and not i.startswith(f"params:{m}.") for i in lane.inputs()
        )


def test_the_run_key_follows_precision_not_where_the_run_executes():
    combos = itertools.product(*EXECUTION.values())
    runtimes = [dict(zip(EXECUTION, values, strict=True)) for values in combos]
    keys = {plan_pretraining("data2vec", INFO, PARAMS, rt).run_key for rt in runtimes}
    assert len(keys) == 1
    bf16 = plan_pretraining("data2vec", INFO, PARAMS, {"precision": "bf16"})
    assert bf16.run_key not in keys
    assert bf16.state_dir == Path("state") / "data2vec" / bf16.run_key
    assert bf16.runtime.precision == "bf16" and bf16.runtime.device == "cpu"


def test_a_bad_runtime_block_is_named_with_its_file():
    with pytest.raises(ConfigError) as err:
        plan_pretraining("data2vec", INFO, PARAMS, {"device": "tpu", "nproc_per_node": 0})
    assert str(err.value).splitlines() == [
        "parameters_runtime.yml: image.runtime.device: 'tpu' is not one of 'auto', 'cpu', "
        "'cuda' or 'mps'",
        "parameters_runtime.yml: image.runtime.nproc_per_node: 0 is outside [1, inf]",
    ]
    with pytest.raises(ConfigError, match=r"image\.runtime\.precision: fp16 needs CUDA"):
        plan_pretraining("data2vec", INFO, PARAMS, {"precision": "fp16"})


def test_dvc_tracks_only_the_runtime_key_that_changes_the_weights():
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    pretrain = {k: v for entry in stages["pretrain"]["do"]["params"] for k, v in entry.items()}
    assert pretrain["conf/base/parameters_runtime.yml"] == ["${item}.runtime.precision"]
    for m in MODALITIES:
        finetune = {k: v for e in stages[f"finetune-{m}"]["params"] for k, v in e.items()}
        assert finetune["conf/base/parameters_runtime.yml"] == [f"{m}.runtime.precision"]
