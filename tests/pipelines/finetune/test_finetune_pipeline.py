"""The finetune pipeline's wiring, and one lane run by Kedro's SequentialRunner on small real
data (sklearn digits, tiny real encoders) into the catalog's file datasets: the merged
per-example test predictions agree with the metrics and confusion matrices."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node
from kedro.runner import SequentialRunner
from sklearn.datasets import load_digits

from d2v_pipeline.data2vec import ImageEncoderConfig, build_encoder, config_to_dict
from d2v_pipeline.datasets import CSVDataset, JSONDataset
from d2v_pipeline.pipelines.finetune import create_pipeline
from d2v_pipeline.pipelines.finetune.nodes import PREDICTION_COLUMNS, evaluate_encoder
from d2v_pipeline.pipelines.ingest.nodes import nested_label_subsets

MODALITIES = ("image", "speech", "text")
METHODS = ("data2vec", "data2vec2", "masked_recon", "scratch")
KEYS = ["method", "protocol", "fraction", "seed"]


def test_lanes_keep_their_names_and_raise_no_dotted_name_warning(monkeypatch):
    # Kedro warns once per process; reset its flag so this build is checked on its own
    monkeypatch.setattr(Node, "__dotted_dataset_name_warned__", False, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        pipeline = create_pipeline()
    expected = {f"{m}.evaluate_{x}" for m in MODALITIES for x in (*METHODS, "raw_input")}
    expected |= {f"{m}.collect_evaluation" for m in MODALITIES}
    assert {n.name for n in pipeline.nodes} == expected
    assert {n.name.split(".")[0] for n in pipeline.nodes} == {n.namespace for n in pipeline.nodes}
    outputs = pipeline.all_outputs()
    for m in MODALITIES:
        assert f"{m}.test_predictions" in outputs
        assert {f"{m}.{x}.method_predictions" for x in (*METHODS, "raw_input")} <= outputs
        lane = pipeline.only_nodes_with_namespaces([m])
        assert f"params:{m}.finetune" in lane.inputs()
        # one runtime block feeds every encoder evaluation of the lane (not the raw baseline)
        readers = {n.name for n in lane.nodes if f"params:{m}.runtime" in n.inputs}
        assert readers == {f"{m}.evaluate_{x}" for x in METHODS}
        assert f"{m}.data2vec2.encoder" in lane.inputs()


def _lane_inputs(n_train: int = 300, n_val: int = 150, n_test: int = 150) -> dict:
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))[: n_train + n_val + n_test]
    x = torch.tensor(d.images[order], dtype=torch.float32)[:, None]
    x = (x - x[:n_train].mean()) / x[:n_train].std()
    y = torch.tensor(d.target[order], dtype=torch.int64)
    cuts = {"train": (0, n_train), "val": (n_train, n_train + n_val)}
    cuts["test"] = (n_train + n_val, n_train + n_val + n_test)
    model_input = {
        f"{s}.{k}": v[a:b] for s, (a, b) in cuts.items() for k, v in (("x", x), ("y", y))
    }
    draws = [nested_label_subsets(y[:n_train].numpy(), (0.1, 1.0), 0, draw=i) for i in range(2)]
    subsets = {k: {str(i): draw[k] for i, draw in enumerate(draws)} for k in draws[0]}
    enc_cfg = ImageEncoderConfig(
        image_size=8, in_channels=1, patch_size=2, dim=32, depth=2, heads=2, ffn_dim=64
    )
    inputs = {
        "image.model_input": model_input,
        "image.label_subsets": subsets,
        "image.dataset_info": {
            "modality": "image", "num_classes": 10, "class_names": [str(i) for i in range(10)],
        },
        "params:image.finetune": {
            "fractions": [0.1, 1.0],
            "seeds": [0, 1],
            "protocols": ["probe_final", "probe_topk", "finetune"],
            "finetune_fractions": [0.1],
            "progress": False,
            "probe": {"top_k": 2, "Cs": [1.0], "max_iter": 100},
            "finetune": {"epochs": 2, "min_steps": 4, "max_steps": 6, "batch_size": 16,
                         "patience": None},
            "raw_baseline": {},
            "projection": {"max_points": 50},
        },
        "params:image.runtime": {"threads": 1},
    }  # fmt: skip
    for i, method in enumerate(METHODS):  # distinct real encoders, one per method
        torch.manual_seed(i)
        encoder = build_encoder(enc_cfg)
        inputs[f"image.{method}.encoder"] = encoder.state_dict()
        inputs[f"image.{method}.pretrain_meta"] = {
            "method": method, "config": {"encoder": config_to_dict(enc_cfg)},
        }  # fmt: skip
    return inputs


@pytest.fixture(scope="module")
def image_lane(tmp_path_factory):
    """Run the image lane; its outputs are written as the catalog's CSV / JSON files (the
    report reads them back from disk) and loaded again."""
    inputs = _lane_inputs()
    lane = create_pipeline().only_nodes_with_namespaces(["image"])
    folder = tmp_path_factory.mktemp("finetune")
    files = {
        name: (JSONDataset if name.endswith("details") else CSVDataset)(str(folder / name))
        for name in lane.all_outputs()
    }
    catalog = DataCatalog({**{k: MemoryDataset(v) for k, v in inputs.items()}, **files})
    SequentialRunner().run(lane, catalog)
    return inputs, {k: ds.load() for k, ds in files.items()}


def test_merged_predictions_cover_every_test_example_of_every_evaluation(image_lane):
    inputs, out = image_lane
    preds, metrics = out["image.test_predictions"], out["image.eval_metrics"]
    assert list(preds.columns) == list(PREDICTION_COLUMNS)
    evaluations = metrics[KEYS].drop_duplicates()
    # 4 methods x (2 probes x 2 fractions + fine-tuning at 10 %) x 2 seeds + raw 2 x 2
    assert len(evaluations) == 4 * (2 * 2 + 1) * 2 + 2 * 2
    n_test = len(inputs["image.model_input"]["test.y"])
    assert len(preds) == n_test * len(evaluations)
    assert set(preds["method"]) == {*METHODS, "raw_input"}
    assert set(preds.loc[preds["method"] == "raw_input", "protocol"]) == {"raw_probe"}
    assert (preds["modality"] == "image").all()
    test_y = inputs["image.model_input"]["test.y"].numpy()
    for _, group in preds.groupby(KEYS):
        assert group["example"].tolist() == list(range(n_test))
        np.testing.assert_array_equal(group["label"].to_numpy(), test_y)


def test_accuracy_from_predictions_equals_the_reported_accuracy(image_lane):
    _, out = image_lane
    preds, metrics = out["image.test_predictions"], out["image.eval_metrics"]
    recomputed = (
        preds.assign(correct=preds["label"] == preds["prediction"])
        .groupby(KEYS)["correct"]
        .mean()
        .rename("recomputed")
        .reset_index()
    )
    reported = metrics[metrics["metric"] == "accuracy"][[*KEYS, "value"]]
    joined = reported.merge(recomputed, on=KEYS, how="outer", validate="one_to_one")
    assert not joined.isna().any().any()  # every evaluation is in both tables
    assert (joined["value"] == joined["recomputed"]).all(), joined


def test_confusion_matrices_are_the_predictions_summed_over_seeds(image_lane):
    _, out = image_lane
    preds, confusion = out["image.test_predictions"], out["image.eval_details"]["confusion"]
    for (method, protocol, fraction), group in preds.groupby(KEYS[:3]):
        cm = np.zeros((10, 10), dtype=np.int64)
        np.add.at(cm, (group["label"].to_numpy(), group["prediction"].to_numpy()), 1)
        assert confusion[method][protocol][str(float(fraction))] == cm.tolist()


def test_per_method_tables_are_pieces_of_the_merged_one(image_lane):
    _, out = image_lane
    merged = out["image.test_predictions"]
    pieces = pd.concat(
        [out[f"image.{m}.method_predictions"] for m in (*METHODS, "raw_input")], ignore_index=True
    )
    pd.testing.assert_frame_equal(pieces, merged)


def test_the_node_fine_tunes_on_two_data_parallel_workers(image_lane):
    """runtime.nproc_per_node=2: the node's fine-tuning runs go to 2 elastic workers (gloo);
    every evaluation is still there, the probes (this process) are unchanged, and the
    fine-tuned classifiers agree with the 1-process ones on nearly every test example (the
    same global batches; the summed gradients differ only in float reassociation)."""
    inputs, out = image_lane
    args = [inputs[f"image.{k}"] for k in ("model_input", "label_subsets", "dataset_info")]
    args += [inputs[f"image.data2vec.{k}"] for k in ("encoder", "pretrain_meta")]
    args += [inputs["params:image.finetune"], {"threads": 1, "nproc_per_node": 2}]
    metrics, _, curves, _, preds = evaluate_encoder(*args)
    one = out["image.data2vec.method_metrics"]
    cols = [*KEYS, "metric"]
    assert metrics[cols].values.tolist() == one[cols].values.tolist()
    probes = metrics["protocol"] != "finetune"
    assert metrics[probes]["value"].tolist() == one[probes]["value"].tolist()
    assert len(curves) == len(out["image.data2vec.method_curves"])
    tuned = preds[preds["protocol"] == "finetune"].reset_index(drop=True)
    single = out["image.data2vec.method_predictions"]
    single = single[single["protocol"] == "finetune"].reset_index(drop=True)
    assert len(tuned) == len(single) > 0
    assert (tuned["prediction"] == single["prediction"]).mean() >= 0.95
