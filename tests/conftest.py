"""Shared test fixtures: throwaway copies of the project for end-to-end Kedro runs.

Every environment writes under its own data root (``conf/<env>/globals.yml``): a smoke run
in a copy writes ``<copy>/data/smoke/...`` (:func:`data_root`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


def data_root(project: Path, env: str = "smoke") -> Path:
    """The folder the catalog of ``env`` writes into (``data_root`` in its globals.yml)."""
    root = None
    for name in ("base", env):
        globals_file = project / "conf" / name / "globals.yml"
        if globals_file.is_file():
            root = (yaml.safe_load(globals_file.read_text()) or {}).get("data_root", root)
    if not root:
        raise ValueError(f"{project}/conf: no data_root in base/ or {env}/globals.yml")
    return project / root


GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def git(project: Path, *args: str) -> str:
    """``git <args>`` in ``project`` (stdout); fails the test with git's message on error."""
    proc = subprocess.run(
        ["git", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **GIT_IDENTITY},
    )
    if proc.returncode != 0:
        pytest.fail(f"git {' '.join(args)} failed in {project}:\n{proc.stderr[-3000:]}")
    return proc.stdout


def clone_project(dest: Path) -> Path:
    """A fresh git repository at ``dest`` holding one commit of the project as it would be
    committed now: every tracked or new, not ignored file (``git ls-files``), nothing
    ignored (no data, no venv). Kedro then runs the copy's own code (bootstrap puts its
    src/ first on sys.path)."""
    listed = git(PROJECT_ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    dest.mkdir(parents=True, exist_ok=True)
    for rel in filter(None, listed.split("\0")):
        src = PROJECT_ROOT / rel
        if src.is_file():  # deleted but still tracked: not part of the next commit
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / "conf" / "local").mkdir(parents=True, exist_ok=True)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "project snapshot")
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
def make_git_project():
    """``make_git_project(dest)``: a git repo, one commit of the project (:func:`clone_project`)."""
    return clone_project


@pytest.fixture(scope="session")
def kedro_cli():
    """``kedro_cli(project, *args)``: run the kedro CLI there, failing the test on error."""
    return run_kedro


@pytest.fixture(scope="session")
def data_root_of():
    """``data_root_of(project, env="smoke")``: the folder that env's catalog writes into."""
    return data_root


@pytest.fixture(scope="session")
def git_cli():
    """``git_cli(project, *args)``: run git there (a test identity), failing the test on error."""
    return git


def version_smoke_results(project: Path, env: str = "smoke") -> list[str]:
    """Let git track ``env``'s cache: false DVC metrics/plots, as it tracks the base ones.

    The project's .gitignore excepts only the base results (``!data/08_reporting/...``);
    a repo that versions smoke runs with DVC (the DVC tests) adds the same exceptions under
    the smoke data root. Returns the lines appended to ``project/.gitignore``.
    """
    rel = data_root(project, env).relative_to(project).as_posix()
    gitignore = project / ".gitignore"
    lines = [
        "!" + rel + line.removeprefix("!data")
        for line in gitignore.read_text().splitlines()
        if line.startswith("!data/") and not line.startswith("!data/**")
    ]
    gitignore.write_text(gitignore.read_text() + "\n".join(["", *lines, ""]))
    return lines


@pytest.fixture(scope="session")
def track_smoke_results():
    """``track_smoke_results(project)``: see :func:`version_smoke_results`."""
    return version_smoke_results


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, make_git_project, kedro_cli, git_cli, data_root_of):
    """One real `kedro run --env smoke` (every lane, then the report) in a git snapshot of
    the project, shared by the end-to-end and browser tests: (project, kedro process, smoke
    data root, `git status` right after the run)."""
    project = make_git_project(tmp_path_factory.mktemp("e2e") / "project")
    proc = kedro_cli(project, "run", "--env", "smoke", timeout=900)
    status = git_cli(project, "status", "--porcelain", "--ignored", "--untracked-files=all")
    return project, proc, data_root_of(project, "smoke"), status.splitlines()
