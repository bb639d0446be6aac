"""The README's S3 remote instructions, run for real: `dvc push` to and `dvc pull` from an
S3-compatible server on 127.0.0.1 (moto, tests/s3_support.py) that checks signatures.

A tiny git + DVC project starts from this project's own ``.dvc/config`` (its git-ignored
``local`` remote is the default) and gets one stage that writes a file and a folder (the
two kinds of outs our stages have: files, and folders like data/08_reporting/figures).
It is pointed at the bucket with exactly the README's commands. Credentials reach DVC only
through ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` in the environment, never
through a file in the project.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_support import S3Server, moto_s3_server

PROJECT_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DVC = str(VENV_BIN / "dvc")

BUCKET = "d2v-team-artefacts"
REMOTE = "storage"
REMOTE_URL = f"s3://{BUCKET}/d2v"
PREFIX = "d2v/"  # the key prefix REMOTE_URL puts every object under

OUT_FILE = "data/05_model_input/tiny/arrays.bin"
OUT_DIR = "data/05_model_input/tiny/shards"

# The stage's command: random bytes, so a re-run instead of a pull would change them.
MAKE_DATA = f"""\
import os
from pathlib import Path

Path("{OUT_DIR}").mkdir(parents=True, exist_ok=True)
Path("{OUT_FILE}").write_bytes(os.urandom(200_000))
for index in range(3):
    Path("{OUT_DIR}", f"shard-{{index:05d}}.bin").write_bytes(os.urandom(50_000 + index))
"""


def _env(home: Path, server: S3Server, secret: str | None = None) -> dict[str, str]:
    """The environment a teammate would have: their S3 keys as env vars, nothing else.

    Every inherited ``AWS_*`` variable is dropped and ~/.aws is pointed at missing files, so
    a developer's own AWS profile can neither help nor break the test; DVC's global and
    system config are private too (a global default remote would change what push does).
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY", ""), "127.0.0.1,localhost"]))
    env.update(
        {
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "AWS_ACCESS_KEY_ID": server.access_key_id,
            "AWS_SECRET_ACCESS_KEY": secret or server.secret_access_key,
            "AWS_CONFIG_FILE": str(home / "aws-config-absent"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials-absent"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
            "DVC_GLOBAL_CONFIG_DIR": str(home / "dvc-global"),
            "DVC_SYSTEM_CONFIG_DIR": str(home / "dvc-system"),
            "DVC_SITE_CACHE_DIR": str(home / "dvc-site-cache"),
            "DVC_NO_ANALYTICS": "1",
            "GIT_AUTHOR_NAME": "test",
            "GIT_AUTHOR_EMAIL": "test@example.invalid",
            "GIT_COMMITTER_NAME": "test",
            "GIT_COMMITTER_EMAIL": "test@example.invalid",
        }
    )
    return env


def _run(
    cwd: Path, env: dict[str, str], *cmd: str, check: bool = True
) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} failed ({proc.returncode}) in {cwd}:\n--- stdout ---\n"
            f"{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
    return proc


def _outputs(project: Path) -> dict[str, bytes]:
    """Every file the stage wrote, by path relative to the project."""
    files = [project / OUT_FILE, *sorted((project / OUT_DIR).glob("*"))]
    return {str(path.relative_to(project)): path.read_bytes() for path in files}


def _cache_keys(project: Path) -> set[str]:
    """The remote keys the local cache's data objects map to (``.dir`` listings included).

    Only ``files/``: ``runs/`` is the run cache, which plain ``dvc push`` does not send.
    """
    root = project / ".dvc" / "cache"
    return {
        PREFIX + str(path.relative_to(root))
        for path in (root / "files").rglob("*")
        if path.is_file()
    }


def _files_containing(project: Path, needle: str) -> list[str]:
    """Project files (outside .git and the DVC cache) whose bytes contain ``needle``."""
    skip = {project / ".git", project / ".dvc" / "cache"}
    return [
        str(path.relative_to(project))
        for path in project.rglob("*")
        if path.is_file()
        and not any(parent in skip for parent in path.parents)
        and needle.encode() in path.read_bytes()
    ]


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    with moto_s3_server(BUCKET) as running:
        yield running


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("s3-home")


@pytest.fixture(scope="module")
def project(tmp_path_factory, server: S3Server, home: Path) -> Path:
    """A committed git + DVC repo with one reproduced stage and the README's S3 remote."""
    root = tmp_path_factory.mktemp("s3-project")
    env = _env(home, server)
    _run(root, env, "git", "init", "-q")
    _run(root, env, DVC, "init", "-q")
    # Start from the project's real DVC config: its `local` remote is the default that the
    # README's `dvc remote add -d` must replace.
    shutil.copy2(PROJECT_ROOT / ".dvc" / "config", root / ".dvc" / "config")
    (root / "make_data.py").write_text(MAKE_DATA)
    _run(root, env, DVC, "stage", "add", "-n", "tiny", "-d", "make_data.py",
         "-o", OUT_FILE, "-o", OUT_DIR, "python make_data.py")  # fmt: skip
    _run(root, env, DVC, "repro")
    # README, "Remote": the team's remote, committed; the endpoint only for non-AWS S3.
    _run(root, env, DVC, "remote", "add", "-d", REMOTE, REMOTE_URL)
    _run(root, env, DVC, "remote", "modify", REMOTE, "endpointurl", server.endpoint_url)
    _run(root, env, "git", "add", "-A")
    _run(root, env, "git", "commit", "-q", "-m", "tiny stage + S3 remote")
    return root


def test_push_to_s3_then_pull_after_losing_cache_and_workspace_restores_every_byte(
    project: Path, server: S3Server, home: Path
):
    env = _env(home, server)
    before = _outputs(project)
    assert len(before) == 4, before.keys()

    # A wrong secret is refused by the server and uploads nothing: the keys DVC signs with
    # are the ones in the environment, and the server really checks them.
    keys_before = server.keys(PREFIX)
    refused = _run(project, _env(home, server, secret="not-the-secret"), DVC, "push", check=False)
    assert refused.returncode != 0, refused.stdout
    assert "403" in refused.stderr or "Forbidden" in refused.stderr, refused.stderr[-2000:]
    assert server.keys(PREFIX) == keys_before

    _run(project, env, DVC, "push")
    # Every cached object (the file, the folder's three shards and its .dir listing)
    # is in the bucket under the remote's prefix, and nothing went to the old default.
    cached = _cache_keys(project)
    assert len(cached) == 5, sorted(cached)
    assert server.keys(PREFIX) == cached
    assert not (project / "dvc_remote").exists()
    # Credentials live in the environment only, never in a project file.
    assert _files_containing(project, server.secret_access_key) == []
    assert _files_containing(project, server.access_key_id) == []
    assert not (project / ".dvc" / "config.local").exists()

    shutil.rmtree(project / ".dvc" / "cache")
    (project / OUT_FILE).unlink()
    shutil.rmtree(project / OUT_DIR)
    pulled = _run(project, env, DVC, "pull")
    assert _outputs(project) == before, pulled.stdout
    assert "in sync" in _run(project, env, DVC, "status", "-c").stdout
    # The pipeline is up to date from pulled outs alone: no stage needs a re-run.
    assert "up to date" in _run(project, env, DVC, "status").stdout


def test_fresh_clone_gets_every_artefact_with_dvc_pull_and_env_credentials(
    project: Path, server: S3Server, home: Path, tmp_path: Path
):
    env = _env(home, server)
    # A no-op after the round trip above; it makes this test runnable on its own.
    _run(project, env, DVC, "push")
    before = _outputs(project)

    clone = tmp_path / "clone"
    _run(tmp_path, env, "git", "clone", "-q", str(project), str(clone))
    assert not (clone / OUT_FILE).exists() and not (clone / ".dvc" / "cache").exists()
    _run(clone, env, DVC, "pull")
    assert _outputs(clone) == before
    assert "in sync" in _run(clone, env, DVC, "status", "-c").stdout
    assert "up to date" in _run(clone, env, DVC, "status").stdout
