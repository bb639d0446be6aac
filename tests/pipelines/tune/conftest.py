"""Fixtures for the tune tests: small real ingested images, the real conf parameters and a
real PostgreSQL server (tests/postgres_support.py)."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from postgres_support import PostgresServer, PostgresUnavailable, postgres_server
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
        return merge(params, overrides)

    return make


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server on 127.0.0.1 for the whole session, stopped and deleted at
    the end. Missing server binaries fail the test (``make test`` installs them)."""
    try:
        with postgres_server() as server:
            yield server
    except PostgresUnavailable as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture
def postgres_url(postgres: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh database on the session's server (one per test): its SQLAlchemy URL."""
    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:50]
    return postgres.create_database(f"t_{name}")
