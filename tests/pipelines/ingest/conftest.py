"""Fixtures for the ingest tests: the real conf/base ingest parameters, with overrides."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def _merge(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


@pytest.fixture(scope="session")
def base_ingest_conf() -> dict[str, Any]:
    with open(PROJECT_ROOT / "conf" / "base" / "parameters_ingest.yml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@pytest.fixture
def ingest_params(base_ingest_conf) -> Callable[..., dict[str, Any]]:
    """``ingest_params("image", max_examples=300)``: a copy of ``image.ingest`` from
    conf/base with (nested) overrides, as a node receives ``params:ingest``."""

    def make(modality: str, **overrides: Any) -> dict[str, Any]:
        params = copy.deepcopy(base_ingest_conf[modality]["ingest"])
        return _merge(params, overrides)

    return make
