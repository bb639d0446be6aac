"""Shared test fixtures: a throwaway copy of the project for end-to-end Kedro runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

for _key, _value in {
    "KEDRO_DISABLE_TELEMETRY": "1",
    "DVC_NO_ANALYTICS": "1",
    "ITERATIVE_DO_NOT_TRACK": "1",
    "MPLBACKEND": "Agg",
}.items():
    os.environ.setdefault(_key, _value)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def copy_project(dest: Path) -> Path:
    """Copy what ``kedro run`` needs (pyproject.toml, conf/ without local/) into ``dest``.

    The package itself is installed (editable), so src/ is left empty; data/ starts empty.
    """
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(PROJECT_ROOT / "pyproject.toml", dest / "pyproject.toml")
    shutil.copytree(
        PROJECT_ROOT / "conf",
        dest / "conf",
        ignore=shutil.ignore_patterns("local"),
        dirs_exist_ok=True,
    )
    (dest / "conf" / "local").mkdir(exist_ok=True)
    (dest / "src").mkdir(exist_ok=True)  # kedro insists on the source dir; the package is installed
    (dest / "data").mkdir(exist_ok=True)
    return dest


def run_kedro(project: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``kedro <args>`` in ``project`` and fail the test with its output if it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "kedro", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if proc.returncode != 0:
        pytest.fail(
            f"kedro {' '.join(args)} failed ({proc.returncode}):\n"
            f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """A fresh copy of the project in a temporary folder."""
    return copy_project(tmp_path / "project")


@pytest.fixture(scope="session")
def make_project():
    """``make_project(dest)``: a fresh copy of the project (see :func:`copy_project`)."""
    return copy_project


@pytest.fixture(scope="session")
def kedro_cli():
    """``kedro_cli(project, *args)``: run the kedro CLI there, failing the test on error."""
    return run_kedro
