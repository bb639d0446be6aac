"""`dvc repro` of the smoke project in a throwaway git repo: runs, no-ops, selective re-runs,
an experiment, and a push/pull round trip through the default (local) remote.

One `dvc repro` from scratch is shared by the module (the slow part: ten `kedro run`
slices of the smoke project); the tests below run in file order and each starts from the
up-to-date state the previous one left.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from d2v_pipeline import dvc_sync

pytestmark = pytest.mark.slow  # minutes, not seconds: deselect with -m "not slow"

MODALITIES = ("image", "speech", "text")
SMOKE = "data/smoke"  # conf/smoke/globals.yml data_root: every smoke stage writes here
RAN = re.compile(r"Running stage '([^']+)'")
CMD = re.compile(r"--pipelines (\S+)(?: --namespaces (\S+))?")


def _env(project: Path) -> dict[str, str]:
    return {
        **os.environ,
        # `kedro` for the stage commands; the copy's own sources (the deps DVC hashes)
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(project / "src"),
        "PYTHONWARNINGS": "ignore",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
    }


def _run(project: Path, *cmd: str, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        list(cmd), cwd=project, capture_output=True, text=True, timeout=timeout, env=_env(project)
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n--- stdout ---\n"
            f"{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def _dvc(project: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return _run(project, str(Path(sys.executable).parent / "dvc"), *args, timeout=timeout)


def _make_run(project: Path) -> subprocess.CompletedProcess:
    """What `make run` runs (the Makefile's `run` recipe, read below): dvc repro + summary."""
    return _run(project, sys.executable, "-m", "d2v_pipeline.repro")


def _up_to_date(project: Path) -> bool:
    return "up to date" in _dvc(project, "status").stdout


def _ran(proc: subprocess.CompletedProcess) -> set[str]:
    return set(RAN.findall(proc.stdout + proc.stderr))


def _stage_names(project: Path) -> dict[tuple[str, str | None], str]:
    """(pipeline, namespace) -> DVC stage name, read from the generated dvc.yaml."""
    doc = yaml.safe_load((project / "dvc.yaml").read_text())
    names = {}
    for name, stage in dvc_sync.expand_stages(doc).items():
        m = CMD.search(stage["cmd"])
        names[(m.group(1), m.group(2))] = name
    return names


def _cached_outs(project: Path) -> list[Path]:
    """Every file of every cached out (not the git-tracked metrics/plots)."""
    doc = yaml.safe_load((project / "dvc.yaml").read_text())
    files = []
    for stage in dvc_sync.expand_stages(doc).values():
        for out in dvc_sync._entries(stage, "outs"):
            path = project / out
            files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return files


def _set_param(path: Path, dotted: str, value: str) -> None:
    """Set a scalar in a block-style YAML file in place, keeping comments (test helper)."""
    keys, stack, lines = dotted.split("."), [], path.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([\w-]+):(.*)$", line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent = len(m.group(1))
        stack = [(d, k) for d, k in stack if d < indent] + [(indent, m.group(2))]
        if [k for _, k in stack] == keys:
            comment = re.search(r"\s+#.*$", m.group(3))
            tail = comment.group(0) if comment else ""
            lines[i] = f"{m.group(1)}{m.group(2)}: {value}{tail}\n"
            path.write_text("".join(lines))
            return
    raise KeyError(f"{path}: no key {dotted}")


@pytest.fixture(scope="module")
def repro(tmp_path_factory, make_project, project_root, track_smoke_results):
    """The smoke project as a git repo with DVC, after one `dvc repro` from scratch."""
    project = make_project(tmp_path_factory.mktemp("dvc") / "project")
    shutil.rmtree(project / "src")
    # the code is a dep of every stage: copy it (the copy is also what runs, via PYTHONPATH)
    shutil.copytree(
        project_root / "src" / "d2v_pipeline",
        project / "src" / "d2v_pipeline",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    # committed files the stages read: the repo's ignore/DVC config and the benchmark result
    # that the report stage depends on (benchmarks/time_to_accuracy.py writes it, not a stage)
    for name in (
        ".gitignore",
        ".dvcignore",
        ".dvc/config",
        ".dvc/.gitignore",
        "benchmarks/results/time_to_accuracy.json",
    ):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project_root / name, project / name)
    track_smoke_results(project)  # commit the smoke metrics/plots as the base ones are
    _run(
        project,
        sys.executable,
        "-m",
        "d2v_pipeline.dvc_sync",
        "--env",
        "smoke",
    )
    _run(project, "git", "init", "-q")
    _run(project, "git", "add", "-A")
    _run(project, "git", "commit", "-qm", "smoke project")
    proc = _make_run(project)
    _run(project, "git", "add", "-A")
    _run(project, "git", "commit", "-qm", "dvc repro")
    return project, proc


def test_make_run_goes_through_dvc_repro(project_root):
    recipe = re.search(r"^run:.*\n((?:\t.*\n)+)", (project_root / "Makefile").read_text(), re.M)
    assert recipe and "-m d2v_pipeline.repro" in recipe.group(1)
    assert "kedro run" not in recipe.group(1)


def test_repro_from_scratch_runs_every_stage_and_commits_metrics(repro):
    project, proc = repro
    names = _stage_names(project)
    assert _ran(proc) == set(names.values())
    assert f"ran {len(names)} of {len(names)} stages" in proc.stdout
    assert f"report written to {SMOKE}/08_reporting/report.html" in proc.stdout
    assert (project / SMOKE / "08_reporting/report.html").stat().st_size > 0
    assert _up_to_date(project)  # every output is in the DVC cache
    tracked = _run(project, "git", "ls-files", "data", "dvc.lock").stdout.split()
    # cache: false metrics/plots are really committed (the .gitignore exceptions work) ...
    assert f"{SMOKE}/08_reporting/metrics.json" in tracked
    assert f"{SMOKE}/08_reporting/label_efficiency.csv" in tracked
    assert f"{SMOKE}/07_model_output/image/data2vec/pretrain_history.csv" in tracked
    # ... and cached outs are not, nor the run bookkeeping
    assert f"{SMOKE}/06_models/image/data2vec/encoder.safetensors" not in tracked
    assert not [p for p in tracked if "09_tracking" in p]
    assert "dvc.lock" in tracked
    # each stage is its own `kedro run`: the last one (report) started from a clean tree,
    # since what earlier stages wrote (the data root, dvc.lock) are run outputs
    info = json.loads((project / SMOKE / "09_tracking/run_info.json").read_text())
    assert info["command"] == "kedro run --env smoke --pipelines report"
    assert info["git_clean"] is True and info["git_commit"]


def test_second_repro_runs_nothing_despite_run_bookkeeping(repro):
    project, _ = repro
    # what a run leaves behind outside the outs must not make anything stale
    timings = project / SMOKE / "09_tracking/node_timings.json"
    timings.write_text(json.dumps({"some.node": 1.0}))
    (project / "src/d2v_pipeline/sources/__pycache__").mkdir(exist_ok=True)
    (project / "src/d2v_pipeline/sources/__pycache__/x.cpython-311.pyc").write_bytes(b"x")
    state = project / SMOKE / "06_models/image/train_state/data2vec/extra"
    state.mkdir(parents=True, exist_ok=True)
    proc = _make_run(project)
    assert _ran(proc) == set()
    assert "Data and pipelines are up to date" in proc.stdout
    assert f"nothing changed, all {len(_stage_names(project))} stages are up to date" in proc.stdout
    assert _up_to_date(project)


def test_image_pretrain_experiment_reruns_only_image_downstream_and_report(repro):
    project, _ = repro
    names = _stage_names(project)
    key = "image.pretrain.data2vec.mask.mask_prob"
    proc = _dvc(project, "exp", "run", "-S", f"conf/base/parameters_pretrain.yml:{key}=0.5")
    assert _ran(proc) == {
        names[("pretrain", "image")],
        names[("finetune", "image")],
        names[("report", None)],
    }
    params = json.loads(_dvc(project, "params", "diff", "--json").stdout)
    change = params["conf/base/parameters_pretrain.yml"][key]
    assert (change["old"], change["new"]) == (0.6, 0.5)
    metrics = json.loads(_dvc(project, "metrics", "diff", "--json").stdout)
    assert metrics[f"{SMOKE}/08_reporting/metrics.json"]  # the experiment changed some metric
    plots = json.loads(_dvc(project, "plots", "diff", "--json").stdout)["data"]
    history = plots[f"{SMOKE}/07_model_output/image/data2vec/pretrain_history.csv"][0]
    assert set(history["revisions"]) == {"HEAD", "workspace"}
    assert "mask_prob" in _dvc(project, "exp", "show", "--no-pager", "--csv").stdout


def test_text_ingest_change_leaves_image_and_speech_alone(repro):
    project, _ = repro
    names = _stage_names(project)
    _set_param(project / "conf/base/parameters_ingest.yml", "text.ingest.seed", "1")
    proc = _make_run(project)
    ran = _ran(proc)
    allowed = {names[(p, "text")] for p in ("ingest", "pretrain", "finetune")}
    assert names[("ingest", "text")] in ran and names[("report", None)] in ran
    assert ran <= allowed | {names[("report", None)]}
    untouched = {names[(p, m)] for p in ("ingest", "pretrain", "finetune") for m in MODALITIES}
    assert not ran & (untouched - allowed)
    assert _up_to_date(project)


def test_push_then_pull_restores_every_artefact_byte_for_byte(repro):
    project, _ = repro
    _dvc(project, "push")
    files = _cached_outs(project)
    assert any("speech" in str(f) and f.name == "clips.safetensors" for f in files)
    before = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    shutil.rmtree(project / ".dvc" / "cache")
    for f in files:
        f.unlink()
    _dvc(project, "pull")
    after = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.exists()}
    assert after == before
    assert "up to date" in _dvc(project, "status").stdout
