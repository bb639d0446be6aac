"""Small, hand-made report inputs: tidy metric tables, histories and metadata shaped like the
outputs of the ingest/pretrain/finetune pipelines."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd
import pytest

# per-method accuracy level; seeds add a fixed offset so means/stds are hand-checkable
LEVELS = {"data2vec": 0.70, "masked_recon": 0.62, "scratch": 0.55, "raw_input": 0.80}
SEED_OFFSET = {0: -0.02, 1: 0.0, 2: 0.03}
# optional per-method x seed noise (``jitter=True``): without it every paired difference is
# the same on every seed, i.e. a zero-width interval
JITTER = {
    "data2vec": (0.004, -0.006, 0.002),
    "masked_recon": (-0.003, 0.005, 0.0),
    "scratch": (0.0, 0.003, -0.004),
    "raw_input": (0.002, -0.002, 0.001),
}


def tidy_metrics(
    modality: str,
    methods: Iterable[str] = ("data2vec", "masked_recon", "scratch"),
    protocols: Iterable[str] = ("probe_final", "probe_topk", "finetune"),
    fractions: Iterable[float] = (0.01, 0.1, 1.0),
    seeds: Iterable[int] = (0, 1, 2),
    raw: bool = True,
    jitter: bool = False,
) -> pd.DataFrame:
    """Accuracy and macro-F1 rows; value = level + 0.05*log10(fraction) + seed offset
    (+ a small per-protocol shift, + JITTER when asked), macro-F1 = accuracy - 0.01."""
    rows: list[dict[str, Any]] = []
    arms = [(m, p) for m in methods for p in protocols]
    if raw:
        arms.append(("raw_input", "raw_probe"))
    for method, protocol in arms:
        shift = {"probe_final": 0.0, "probe_topk": 0.01, "finetune": 0.02}.get(protocol, 0.0)
        for fraction in fractions:
            for seed in seeds:
                acc = LEVELS[method] + 0.05 * np.log10(fraction) + SEED_OFFSET[seed] + shift
                acc += JITTER[method][seed] if jitter else 0.0
                for metric, value in (("accuracy", acc), ("macro_f1", acc - 0.01)):
                    rows.append(
                        {
                            "modality": modality,
                            "method": method,
                            "fraction": fraction,
                            "seed": seed,
                            "protocol": protocol,
                            "metric": metric,
                            "value": round(float(value), 6),
                        }
                    )
    return pd.DataFrame(rows)


def pretrain_history(steps: int = 30, collapse: bool = False) -> pd.DataFrame:
    step = np.arange(steps) * 10
    return pd.DataFrame(
        {
            "step": step,
            "loss": 1.0 / (1 + step / 50),
            "lr": np.full(steps, 1e-3),
            "tau": 0.99 + 0.009 * np.minimum(step / 100, 1),
            "target_std": np.full(steps, 0.05 if collapse else 0.8),
            "pred_std": np.linspace(0.002, 0.5, steps),
            "samples_per_s": np.full(steps, 500.0),
            "elapsed_s": step * 0.1,
            "extra_column": 1,  # tolerated
        }
    )


def pretrain_meta(modality: str, method: str, collapsed: bool = False) -> dict[str, Any]:
    return {
        "method": method,
        "modality": modality,
        "steps": 290,
        "wall_time_s": 29.0,
        "collapsed": collapsed,
        "collapse_step": 120 if collapsed else None,
        "final_loss": 0.15,
        "final_target_std": 0.05 if collapsed else 0.8,
        "final_pred_std": 0.5,
        "seed": 0,
        "data_hash": f"hash-{modality}",
        "config": {
            "encoder": {"dim": 48, "depth": 3, "heads": 2, "ffn_dim": 96},
            "train": {"steps": 290, "batch_size": 16, "device": "cpu"},
        },
        "environment": {
            "python": "3.11.9",
            "cpu_count": 2,
            "packages": {"torch": "2.14.1"},
            "git_commit": "0123abc",
        },
        "deviations": ["Tiny scale: D 128 <not> the paper's D 768.", f"{modality}-only note"],
    }


def eval_details(methods=("data2vec", "scratch"), protocols=("probe_final", "finetune")):
    cm = [[8, 1, 1], [2, 7, 1], [0, 3, 7]]
    return {
        "class_names": ["zero", "one", "two"],
        "confusion": {m: {p: {"0.1": cm, "1.0": cm} for p in protocols} for m in methods},
    }


def finetune_curves(methods=("data2vec", "scratch")) -> pd.DataFrame:
    rows = [
        {
            "method": m,
            "fraction": f,
            "seed": s,
            "epoch": e,
            "train_loss": 1.0 / (e + 1),
            "val_accuracy": 0.4 + 0.1 * e + 0.01 * s,
        }
        for m in methods
        for f in (0.1, 1.0)
        for s in (0, 1)
        for e in range(4)
    ]
    return pd.DataFrame(rows)


def feature_projection(methods=("data2vec", "masked_recon", "scratch")) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [
        {
            "method": m,
            "component_1": float(rng.normal(i % 3)),
            "component_2": float(rng.normal()),
            "label": i % 3,
        }
        for m in methods
        for i in range(60)
    ]
    return pd.DataFrame(rows)


RUN_INFO = {
    "env": "base",
    "command": "kedro run",
    "started_at": "2026-11-28T10:00:00+00:00",
    "git_commit": "abc1234",
    "git_clean": True,
    "git_changes": [],
    "git_changes_total": 0,
    "data_root": "data",
    "kedro_version": "1.7.0",
}


def full_datasets(
    modalities=("image", "text"),
    collapsed: tuple[str, str] | None = None,
    run_info: dict[str, Any] | None = None,
):
    """Catalog-named inputs: ``image`` complete; ``text`` without fine-tuning, curves,
    projection or confusion (to exercise the "not run" paths). Scores carry per-seed noise
    (JITTER), so intervals have a width; ``run_info`` defaults to a clean base run."""
    datasets: dict[str, Any] = {}
    for m in modalities:
        complete = m == "image"
        protocols = ("probe_final", "probe_topk", "finetune") if complete else ("probe_final",)
        datasets[f"{m}.eval_metrics"] = tidy_metrics(m, protocols=protocols, jitter=True)
        datasets[f"{m}.dataset_summary"] = {
            "modality": m,
            "source": f"{m}-source",
            "content_hash": f"hash-{m}",
            "splits": {"train": {"n": 300}, "test": {"n": 100}},
            "counts": {"train": 300, "val": 50, "test": 100},
        }
        datasets[f"{m}.eval_details"] = eval_details() if complete else None
        datasets[f"{m}.finetune_curves"] = finetune_curves() if complete else None
        datasets[f"{m}.feature_projection"] = feature_projection() if complete else None
        for method in ("data2vec", "masked_recon"):
            is_collapsed = collapsed == (m, method)
            datasets[f"{m}.{method}.pretrain_history"] = (
                pretrain_history(collapse=is_collapsed) if complete else None
            )
            datasets[f"{m}.{method}.pretrain_meta"] = pretrain_meta(m, method, is_collapsed)
    datasets["parameters"] = {
        "image": {"pretrain": {"train": {"steps": 5, "lr": 0.001}}},
        "report": {"decimals": 1},
    }
    datasets["base_parameters"] = {
        "image": {"pretrain": {"train": {"steps": 2000, "lr": 0.001}}},
        "report": {"decimals": 1},
    }
    datasets["node_timings"] = {"image.pretrain_data2vec": 30.0, "image.evaluate_scratch": 10.0}
    datasets["run_info"] = dict(RUN_INFO if run_info is None else run_info)
    return datasets


@pytest.fixture(scope="session")
def make_metrics() -> Callable[..., pd.DataFrame]:
    return tidy_metrics


@pytest.fixture(scope="session")
def make_datasets() -> Callable[..., dict[str, Any]]:
    return full_datasets


@pytest.fixture(scope="session")
def smoke_report(smoke_run):
    """The smoke data root of the shared real smoke run (tests/conftest.py), whose
    08_reporting/ holds its HTML report."""
    return smoke_run[2]
