"""The whole default graph end to end with smoke sizes: ingest, pretrain, finetune, report.

The smoke run happens in a fresh git repository holding one commit of the project (the
committed base results included), so the tests can check that a run never dirties the tree
and that the run's identity (run_info) names that commit.
"""

from __future__ import annotations

import json
from datetime import datetime
from html.parser import HTMLParser

import pandas as pd
import pytest
from kedro import __version__ as kedro_version

from d2v_pipeline import experiment
from d2v_pipeline.hooks import command_line

MODALITIES = ("image", "speech", "text")
METHODS = ("data2vec", "masked_recon", "scratch")


class _ExternalRefs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith(("data:", "#")):
                self.external.append(f"<{tag} {name}={value}>")


def test_smoke_run_leaves_the_git_tree_clean(smoke_run):
    """Nothing tracked changes, nothing new appears, and every ignored file the run wrote
    is under the smoke data root (Kedro-Viz's own dataset stats aside)."""
    project, _, root, status = smoke_run
    assert [line for line in status if not line.startswith("!! ")] == []
    written = [line[3:] for line in status]
    smoke = root.relative_to(project).as_posix() + "/"
    outside = [p for p in written if not p.startswith((smoke, ".viz/")) and "__pycache__" not in p]
    assert outside == []
    assert any(p.startswith(smoke + "08_reporting/metrics.json") for p in written)
    assert any(p.startswith(smoke + "09_tracking/node_timings.json") for p in written)


def test_run_info_records_the_run_identity_at_the_start(smoke_run, git_cli):
    project, _, root, _ = smoke_run
    info = json.loads((root / "09_tracking" / "run_info.json").read_text())
    assert info["env"] == "smoke"
    assert info["command"] == "kedro run --env smoke"
    assert info["git_commit"] == git_cli(project, "rev-parse", "--short", "HEAD").strip()
    assert info["git_clean"] is True and info["git_changes"] == []
    assert info["data_root"] == "data/smoke"
    assert info["kedro_version"] == kedro_version
    started = datetime.fromisoformat(info["started_at"])
    assert started.utcoffset().total_seconds() == 0  # UTC
    # the pretraining metadata names the same commit, recorded once at the start
    meta = json.loads((root / "06_models/text/data2vec/metadata.json").read_text())
    assert meta["environment"]["git_commit"] == info["git_commit"]


@pytest.mark.parametrize("env", ["base", "smoke", "large"])
def test_folders_named_by_parameters_are_under_the_env_data_root(project_root, env):
    """What nodes write outside the catalog (resumable training state, the speech synthesis
    cache) stays under the environment's data root, like every catalog path."""
    from kedro.config import OmegaConfigLoader

    conf = OmegaConfigLoader(
        str(project_root / "conf"),
        base_env="base",
        default_run_env=env,
        merge_strategy={"parameters": "soft"},
    )
    root = conf["globals"]["data_root"].rstrip("/") + "/"
    params = conf["parameters"]
    folders = {f"{m}.pretrain.state_dir": params[m]["pretrain"]["state_dir"] for m in MODALITIES}
    folders["speech.ingest.espeak.cache_dir"] = params["speech"]["ingest"]["espeak"]["cache_dir"]
    assert {k: v for k, v in folders.items() if not f"{v}/".startswith(root)} == {}


def test_git_state_ignores_the_run_outputs_only(tmp_path, git_cli):
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "data" / "08_reporting").mkdir(parents=True)
    for rel in ("src/a.py", "data/08_reporting/metrics.json", "dvc.lock"):
        (repo / rel).write_text("v1\n")
    assert experiment.git_state(repo) == experiment.GitState(commit=None)  # not a repo yet
    git_cli(repo, "init", "-q")
    git_cli(repo, "add", "-A")
    git_cli(repo, "commit", "-qm", "one")
    sha = git_cli(repo, "rev-parse", "--short", "HEAD").strip()
    assert experiment.git_state(repo) == experiment.GitState(sha, ())
    # what a base run or `dvc repro` rewrites on purpose does not count ...
    (repo / "data/08_reporting/metrics.json").write_text("v2\n")
    (repo / "dvc.lock").write_text("v2\n")
    assert experiment.git_state(repo).clean
    # (nor new files under a data root inside a new folder, which plain `git status`
    # would show as one entry for the whole folder)
    (repo / "runs/smoke").mkdir(parents=True)
    (repo / "runs/smoke/metrics.json").write_text("v1\n")
    assert experiment.git_state(repo, data_root="runs/smoke").changes == (
        "data/08_reporting/metrics.json",
    )
    (repo / "runs/smoke/metrics.json").unlink()
    # ... but for a smoke run (data root data/smoke) the base results are not its outputs
    smoke = experiment.git_state(repo, data_root="data/smoke")
    assert smoke.changes == ("data/08_reporting/metrics.json",)
    assert smoke.describe() == f"{sha}+dirty"
    # code changes and new files do count; paths stay repository-relative for a project
    # in a subfolder (whose own dvc.lock would sit there)
    (repo / "dvc.lock").write_text("v1\n")
    (repo / "src/a.py").write_text("v2\n")
    (repo / "src/new file.py").write_text("x\n")
    state = experiment.git_state(repo / "src", data_root="../data")
    assert set(state.changes) == {"src/a.py", "src/new file.py"} and not state.clean


def test_command_line_is_the_argv_as_typed():
    assert command_line(["/venv/bin/kedro", "run", "--env", "smoke"]) == "kedro run --env smoke"
    main = "/venv/lib/python3.11/site-packages/kedro/__main__.py"
    assert command_line([main, "run", "--namespaces", "image"]) == "kedro run --namespaces image"
    assert command_line(["python -m kedro", "run"]) == "kedro run"  # kedro/__main__.py's argv[0]
    assert command_line(["/venv/bin/pytest", "-k", "a b"]) == "pytest -k 'a b'"


def test_registry_lists_every_stage(tmp_path, make_project, kedro_cli):
    project = make_project(tmp_path / "p")
    out = kedro_cli(project, "registry", "list").stdout
    for name in ("__default__", "ingest", "pretrain", "finetune", "report", "tune"):
        assert f"- {name}" in out


def test_smoke_run_writes_the_report_for_every_modality_and_method(smoke_run):
    _, proc, root, _ = smoke_run
    assert "Report written to" in proc.stdout
    reporting = root / "08_reporting"
    html = (reporting / "report.html").read_text()
    md = (reporting / "report.md").read_text()
    for modality in MODALITIES:
        assert modality in html and modality in md
        metrics = pd.read_csv(root / "07_model_output" / modality / "eval_metrics.csv")
        assert set(METHODS) | {"raw_input"} <= set(metrics["method"])
        assert {"probe_final", "probe_topk", "finetune", "raw_probe"} <= set(metrics["protocol"])
        assert metrics["value"].between(0, 1).all()
        for method in METHODS:
            assert method in html
            meta_file = root / "06_models" / modality / method / "metadata.json"
            meta = json.loads(meta_file.read_text())
            assert meta["method"] == method and meta["data_hash"]
    parser = _ExternalRefs()
    parser.feed(html)
    assert parser.external == []  # self-contained: opens from disk, loads nothing
    summary = json.loads((reporting / "metrics.json").read_text())
    assert set(MODALITIES) <= set(summary)


def test_second_run_resumes_pretraining_from_the_finished_state(smoke_run, kedro_cli):
    """A finished training state is reused: the same config does not train again."""
    project, _, root, _ = smoke_run
    state = root / "06_models" / "image" / "train_state" / "data2vec"  # image.pretrain.state_dir
    assert any(state.iterdir())
    proc = kedro_cli(
        project, "run", "--env", "smoke", "--namespaces", "image", "--pipelines", "pretrain"
    )
    assert "resuming data2vec/image" in proc.stdout + proc.stderr


def test_notebook_rebuilds_the_main_table_from_the_catalog(smoke_run, project_root, monkeypatch):
    """notebooks/results.ipynb runs top to bottom on the smoke outputs."""
    import nbformat
    from nbclient import NotebookClient

    project, _, _, _ = smoke_run
    nb = nbformat.read(project_root / "notebooks" / "results.ipynb", as_version=4)
    monkeypatch.setenv("D2V_PROJECT", str(project))
    monkeypatch.setenv("D2V_ENV", "smoke")
    NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(project)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = " ".join(str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "data2vec" in text and "scratch" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)


def test_kedro_viz_build_works_offline(tmp_path, make_project, kedro_cli):
    """`kedro viz build` writes a static pipeline map with every modality lane."""
    project = make_project(tmp_path / "viz")
    kedro_cli(project, "viz", "build")
    build = project / "build"
    assert (build / "index.html").is_file()
    main = json.loads((build / "api" / "main").read_text())
    assert set(MODALITIES) <= set(main["modular_pipelines"])  # three lanes
    # the catalog's layers, drawn as bands in the order data flows through them (run
    # bookkeeping is in `reporting`: see conf/base/catalog.yml)
    assert main["layers"] == [
        "raw", "intermediate", "model_input", "models", "model_output", "reporting"
    ]  # fmt: skip
    # training state is the pretrain nodes' own business, not a free input on the map
    assert not [n["name"] for n in main["nodes"] if "train_state" in n["name"]]
    assert {"__default__", "ingest", "pretrain", "finetune", "report", "tune"} <= {
        p["id"] for p in main["pipelines"]
    }
