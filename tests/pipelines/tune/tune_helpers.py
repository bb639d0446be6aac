"""Helpers shared by the tune tests (a uniquely named module, importable from the tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def merge(base: dict, overrides: dict) -> dict:
    """Soft merge, as the project's config loader does across environments."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def smoke_runtime() -> dict[str, Any]:
    """``image.runtime`` of the smoke environment with one thread (the machine is shared)."""
    return {**conf_params("runtime")["image"]["runtime"], "threads": 1}


def conf_params(name: str, env: str = "smoke") -> dict[str, Any]:
    """conf/base/parameters_<name>.yml with conf/<env>'s overrides merged in."""
    with open(PROJECT_ROOT / "conf" / "base" / f"parameters_{name}.yml", encoding="utf-8") as fh:
        params = yaml.safe_load(fh)
    env_file = PROJECT_ROOT / "conf" / env / f"parameters_{name}.yml"
    if env != "base" and env_file.is_file():
        with open(env_file, encoding="utf-8") as fh:
            merge(params, yaml.safe_load(fh) or {})
    return params
