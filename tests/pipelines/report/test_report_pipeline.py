"""The ``report`` pipeline run by Kedro's SequentialRunner on small in-memory inputs, writing
the real output datasets (atomic Text/JSON/CSV/Figures datasets) into a temporary folder."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from d2v_pipeline.datasets import CSVDataset, FiguresDataset, JSONDataset, TextDataset
from d2v_pipeline.pipelines.pretrain.pipeline import PRETRAINED_METHODS
from d2v_pipeline.pipelines.report import create_pipeline
from d2v_pipeline.reporting import report_config_from_dict
from d2v_pipeline.reporting.inputs import RUN_DATASETS

PROJECT = Path(__file__).resolve().parents[3]
OUTPUTS = {"report_html", "report_md", "report_metrics", "report_figures", "label_efficiency"}


def _metrics(modality: str) -> pd.DataFrame:
    rows = []
    level = {"data2vec": 0.7, "masked_recon": 0.6, "scratch": 0.5, "raw_input": 0.65}
    arms = [(m, p) for m in ("data2vec", "masked_recon", "scratch") for p in ("probe_final",)]
    for method, protocol in [*arms, ("raw_input", "raw_probe")]:
        for fraction in (0.1, 1.0):
            for seed in (0, 1):
                acc = level[method] + 0.1 * fraction + 0.01 * seed
                for metric in ("accuracy", "macro_f1"):
                    rows.append(
                        dict(
                            modality=modality,
                            method=method,
                            fraction=fraction,
                            seed=seed,
                            protocol=protocol,
                            metric=metric,
                            value=acc,
                        )
                    )
    return pd.DataFrame(rows)


def _history() -> pd.DataFrame:
    step = np.arange(10) * 5
    return pd.DataFrame(
        {
            "step": step,
            "loss": 1 / (1 + step),
            "lr": 1e-3,
            "tau": np.nan,
            "target_std": 0.7,
            "pred_std": 0.3,
            "samples_per_s": 100.0,
            "elapsed_s": step / 10,
        }
    )


def _inputs(modality: str, method: str) -> dict:
    meta = {
        "method": method,
        "modality": modality,
        "collapsed": False,
        "steps": 45,
        "wall_time_s": 4.5,
        "environment": {"python": "3.11"},
        "deviations": ["tiny"],
    }
    return {
        f"{modality}.dataset_summary": {"content_hash": "abc", "source": "digits"},
        f"{modality}.eval_metrics": _metrics(modality),
        f"{modality}.eval_details": {
            "class_names": ["a", "b"],
            "confusion": {"data2vec": {"probe_final": {"0.1": [[3, 1], [0, 4]]}}},
        },
        f"{modality}.finetune_curves": pd.DataFrame(
            {
                "method": "data2vec",
                "fraction": 0.1,
                "seed": 0,
                "epoch": [0, 1, 2],
                "train_loss": [1.0, 0.5, 0.3],
                "val_accuracy": [0.5, 0.6, 0.7],
            }
        ),
        f"{modality}.feature_projection": pd.DataFrame(
            {
                "method": "data2vec",
                "component_1": [0.0, 1.0, 2.0],
                "component_2": [1.0, 0.0, 1.0],
                "label": [0, 1, 1],
            }
        ),
        f"{modality}.{method}.pretrain_history": _history(),
        f"{modality}.{method}.pretrain_meta": meta,
        "parameters": {"report": {"decimals": 2}, "image": {"finetune": {"seeds": [0, 1]}}},
        "base_parameters": {"report": {"decimals": 2}, "image": {"finetune": {"seeds": [0]}}},
        f"{modality}.test_predictions": None,  # not produced: intervals cover the seeds only
        "node_timings": {"image.pretrain_data2vec": 12.0},
        "time_to_accuracy": {},  # the benchmark was not run
        "run_info": {"env": "smoke", "command": "kedro run --env smoke", "git_commit": None},
        "params:report": {"decimals": 2},
    }


def test_default_pipeline_reads_the_agreed_dataset_names():
    pipeline = create_pipeline()
    inputs = pipeline.inputs()
    lane = {
        "dataset_summary",
        "eval_metrics",
        "eval_details",
        "finetune_curves",
        "feature_projection",
        "test_predictions",
    }
    for m in ("image", "speech", "text"):
        # one node per lane, in the lane's namespace, bundles the lane's datasets
        (bundle,) = [n for n in pipeline.nodes if n.name == f"{m}.report_bundle"]
        assert bundle.namespace == m and bundle.outputs == [f"{m}_report_inputs"]
        runs = {f"{method}.{d}" for method in PRETRAINED_METHODS for d in RUN_DATASETS}
        assert set(bundle.inputs) == {f"{m}.{d}" for d in lane | runs}
        assert {f"{m}.{d}" for d in lane | runs} <= inputs
    globals_ = {"parameters", "base_parameters", "node_timings", "time_to_accuracy", "run_info"}
    assert globals_ | {"params:report"} <= inputs
    (gather,) = [n for n in pipeline.nodes if n.name == "report.gather_inputs"]
    assert (
        set(gather.inputs) == {f"{m}_report_inputs" for m in ("image", "speech", "text")} | globals_
    )
    assert pipeline.all_outputs() >= OUTPUTS
    assert pipeline.outputs() == OUTPUTS - {"report_figures"}  # also read by later nodes
    assert all(n.name.startswith("report.") for n in pipeline.nodes if n.namespace is None)


def test_conf_files_declare_the_outputs_and_valid_parameters():
    catalog = yaml.safe_load((PROJECT / "conf/base/catalog_report.yml").read_text())
    assert set(catalog) == OUTPUTS
    assert catalog["report_figures"]["type"] == "d2v_pipeline.datasets.FiguresDataset"
    params = yaml.safe_load((PROJECT / "conf/base/parameters_report.yml").read_text())
    config = report_config_from_dict(params["report"])
    assert config.headline_fraction == 0.1 and config.figures_dir == "figures"


def test_pipeline_writes_a_self_contained_report(tmp_path: Path):
    out = tmp_path / "08_reporting"
    catalog = DataCatalog(
        {
            **{k: MemoryDataset(v) for k, v in _inputs("image", "data2vec").items()},
            "report_html": TextDataset(str(out / "report.html")),
            "report_md": TextDataset(str(out / "report.md")),
            "report_metrics": JSONDataset(str(out / "metrics.json")),
            "report_figures": FiguresDataset(str(out / "figures")),
            "label_efficiency": CSVDataset(str(out / "label_efficiency.csv")),
        }
    )
    pipeline = create_pipeline(modalities=("image",), pretrained_methods=("data2vec",))
    SequentialRunner().run(pipeline, catalog)

    pngs = sorted((out / "figures").glob("*.png"))
    assert {p.stem for p in pngs} == {
        "image_label_efficiency",
        "image_pretraining",
        "image_projection",
        "image_confusion_data2vec",
        "image_finetune_curves",
    }
    html = (out / "report.html").read_text(encoding="utf-8")
    # the HTML embeds exactly the PNGs on disk
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert sorted(base64.b64decode(e) for e in embedded) == sorted(p.read_bytes() for p in pngs)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    md = (out / "report.md").read_text(encoding="utf-8")
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / link).is_file(), link
    metrics = json.loads((out / "metrics.json").read_text())
    cell = metrics["image"]["probe_final"]["data2vec"]["frac_0.1"]
    assert cell["accuracy_mean"] == pytest.approx(0.715) and cell["n_seeds"] == 2
    assert metrics["image"]["deltas"]["data2vec_minus_scratch"]["probe_final"]["frac_1"][
        "accuracy_mean"
    ] == pytest.approx(0.2)
    table = pd.read_csv(out / "label_efficiency.csv")
    assert len(table) == 4 * 2  # 4 methods x 2 fractions
    # decimals: 2 came from params:report
    assert "71.50 ± 0.71" in html
    assert "image.finetune.seeds" in html  # the parameter that differs from conf/base
    assert "fine-tuning (finetune) was not run for image" in html


def test_a_partial_run_reports_its_lane_and_names_the_missing_ones(tmp_path: Path):
    """After `kedro run --namespaces image` the other lanes' files are missing (they load as
    None): the report covers image and says how to produce speech and text."""
    out = tmp_path / "08_reporting"
    datasets = _inputs("image", "data2vec")
    methods = ("data2vec",)
    for m in ("speech", "text"):
        for name in create_pipeline(modalities=(m,), pretrained_methods=methods).inputs():
            if name.startswith(f"{m}."):
                datasets[name] = None
    catalog = DataCatalog(
        {
            **{k: MemoryDataset(v) for k, v in datasets.items()},
            "report_html": TextDataset(str(out / "report.html")),
            "report_md": TextDataset(str(out / "report.md")),
            "report_metrics": JSONDataset(str(out / "metrics.json")),
            "report_figures": FiguresDataset(str(out / "figures")),
            "label_efficiency": CSVDataset(str(out / "label_efficiency.csv")),
        }
    )
    SequentialRunner().run(create_pipeline(pretrained_methods=methods), catalog)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<h1>data2vec vs baselines — images (speech, text not run) — SMOKE RUN" in html
    assert "`kedro run --env smoke --namespaces speech,text`" in html
    assert 'id="results-image"' in html and 'id="results-speech"' not in html
    assert set(json.loads((out / "metrics.json").read_text())) == {"image"}
