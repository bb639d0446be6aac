"""Fixtures for the tune tests: small real ingested images and the real conf parameters."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from tune_helpers import conf_params, merge

from d2v_pipeline.pipelines.ingest import nodes as ingest


@pytest.fixture(scope="session")
def image_data() -> dict[str, Any]:
    """MNIST digits ingested with the smoke settings (600 images: 420 train, 60 val)."""
    params = conf_params("ingest")["image"]["ingest"]
    source = ingest.load_image_source(params)
    splits = ingest.split_dataset(source, params)
    model_input, info = ingest.build_image_input(source, splits, params)
    subsets = ingest.make_label_subsets(source, splits, params)
    return {"model_input": model_input, "dataset_info": info, "label_subsets": subsets}


@pytest.fixture
def pretrain_params() -> dict[str, Any]:
    """``image.pretrain`` of the smoke environment (a 2-block, 32-wide encoder)."""
    return conf_params("pretrain")["image"]["pretrain"]


@pytest.fixture
def tune_params() -> Callable[..., dict[str, Any]]:
    """``tune_params(n_trials=2, pruner={...})``: ``image.tune`` (smoke) with overrides."""

    def make(**overrides: Any) -> dict[str, Any]:
        params = copy.deepcopy(conf_params("tune")["image"]["tune"])
        params["train"] = {**params.get("train", {}), "threads": 1}
        return merge(params, overrides)

    return make
