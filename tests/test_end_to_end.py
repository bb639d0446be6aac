"""The whole default graph end to end with smoke sizes: ingest, pretrain, finetune, report."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pandas as pd
import pytest

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


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, make_project, kedro_cli):
    project = make_project(tmp_path_factory.mktemp("e2e") / "project")
    proc = kedro_cli(project, "run", "--env", "smoke", timeout=900)
    return project, proc


def test_registry_lists_every_stage(tmp_path, make_project, kedro_cli):
    project = make_project(tmp_path / "p")
    out = kedro_cli(project, "registry", "list").stdout
    for name in ("__default__", "ingest", "pretrain", "finetune", "report", "tune"):
        assert f"- {name}" in out


def test_smoke_run_writes_the_report_for_every_modality_and_method(smoke_run):
    project, proc = smoke_run
    assert "Report written to" in proc.stdout
    reporting = project / "data" / "08_reporting"
    html = (reporting / "report.html").read_text()
    md = (reporting / "report.md").read_text()
    for modality in MODALITIES:
        assert modality in html and modality in md
        metrics = pd.read_csv(project / "data" / "07_model_output" / modality / "eval_metrics.csv")
        assert set(METHODS) | {"raw_input"} <= set(metrics["method"])
        assert {"probe_final", "probe_topk", "finetune", "raw_probe"} <= set(metrics["protocol"])
        assert metrics["value"].between(0, 1).all()
        for method in METHODS:
            assert method in html
            meta = json.loads(
                (project / "data" / "06_models" / modality / method / "metadata.json").read_text()
            )
            assert meta["method"] == method and meta["data_hash"]
    parser = _ExternalRefs()
    parser.feed(html)
    assert parser.external == []  # self-contained: opens from disk, loads nothing
    summary = json.loads((reporting / "metrics.json").read_text())
    assert set(MODALITIES) <= set(summary)


def test_second_run_resumes_pretraining_from_the_finished_state(smoke_run, kedro_cli):
    """A finished training state is reused: the same config does not train again."""
    project, _ = smoke_run
    state = project / "data" / "06_models" / "image" / "data2vec" / "train_state"
    assert any(state.iterdir())
    proc = kedro_cli(
        project, "run", "--env", "smoke", "--namespaces", "image", "--pipelines", "pretrain"
    )
    assert "resuming data2vec/image" in proc.stdout + proc.stderr


def test_notebook_rebuilds_the_main_table_from_the_catalog(smoke_run, project_root, monkeypatch):
    """notebooks/results.ipynb runs top to bottom on the smoke outputs."""
    import nbformat
    from nbclient import NotebookClient

    project, _ = smoke_run
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
    assert {"__default__", "ingest", "pretrain", "finetune", "report", "tune"} <= {
        p["id"] for p in main["pipelines"]
    }
