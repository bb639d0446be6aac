"""dvc.yaml generation from the Kedro project, and the drift check (d2v_pipeline.dvc_sync)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from d2v_pipeline import dvc_sync
from d2v_pipeline.pipelines.finetune.pipeline import create_pipeline as finetune_pipeline
from d2v_pipeline.pipelines.ingest.pipeline import create_pipeline as ingest_pipeline
from d2v_pipeline.pipelines.pretrain.pipeline import PRETRAINED_METHODS
from d2v_pipeline.pipelines.pretrain.pipeline import create_pipeline as pretrain_pipeline
from d2v_pipeline.pipelines.report.pipeline import create_pipeline as report_pipeline

MODALITIES = ("image", "speech", "text")
SMOKE = "data/smoke"  # conf/smoke/globals.yml data_root: where every smoke path lives
CMD = re.compile(r"--env (\S+) --pipelines (\S+)(?: --namespaces (\S+))?")


def _sync_cli(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "d2v_pipeline.dvc_sync", "--project", str(project), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def _git_init(project: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)


def _stages(text: str) -> dict[str, dict]:
    """Expanded stages keyed by (pipeline, namespace) parsed from each stage's kedro command."""
    out = {}
    for name, stage in dvc_sync.expand_stages(yaml.safe_load(text)).items():
        m = CMD.search(stage["cmd"])
        assert m, f"stage {name}: not a kedro slice: {stage['cmd']}"
        out[(m.group(2), m.group(3))] = {**stage, "name": name, "env": m.group(1)}
    return out


def _paths(stage: dict, key: str) -> dict[str, dict | None]:
    return dvc_sync._entries(stage, key)


@pytest.fixture(scope="module")
def smoke_project(
    tmp_path_factory, make_project, project_root, track_smoke_results
) -> tuple[Path, str]:
    """A project copy (git repo, the project's .gitignore with its metrics/plots exceptions
    repeated under the smoke data root) with dvc.yaml generated for smoke."""
    project = make_project(tmp_path_factory.mktemp("sync") / "project")
    shutil.copy2(project_root / ".gitignore", project / ".gitignore")
    assert len(track_smoke_results(project)) == 3  # metrics.json, label_efficiency, histories
    _git_init(project)
    path = dvc_sync.write(project, dvc_sync.SyncConfig(env="smoke"))
    return project, path.read_text()


# --------------------------------------------------------------------------- the real project


def test_committed_dvc_yaml_is_the_generators_output_for_base(project_root):
    proc = _sync_cli(project_root, "--check")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "matches" in proc.stdout


# --------------------------------------------------------------------------- smoke variant


def test_every_stage_is_a_kedro_slice_of_the_smoke_env(smoke_project):
    _, text = smoke_project
    stages = _stages(text)
    expected = {(p, m) for p in ("ingest", "pretrain", "finetune") for m in MODALITIES}
    assert set(stages) == expected | {("report", None)}  # tune is not part of the default run
    assert {s["env"] for s in stages.values()} == {"smoke"}
    params = {
        f"{f}:{k}"
        for f, ks in _paths(stages[("pretrain", "image")], "params").items()
        for k in ks or ["*"]
    }
    assert params == {
        "conf/base/parameters_pretrain.yml:image.pretrain",
        "conf/smoke/parameters_pretrain.yml:image.pretrain",
        "conf/base/parameters_runtime.yml:image.runtime.precision",
    }
    deps = _paths(stages[("pretrain", "image")], "deps")
    assert "src/d2v_pipeline/data2vec" in deps and "src/d2v_pipeline/pipelines/pretrain" in deps
    assert f"{SMOKE}/05_model_input/image/arrays.safetensors" in deps


def _catalog_paths(project: Path) -> tuple[dict[str, dict], list[tuple[re.Pattern, dict]]]:
    """The catalog files as written, with factory patterns as regexes (independent of Kedro)."""
    exact, patterns = {}, []
    for f in sorted((project / "conf" / "base").glob("catalog*.yml")):
        for name, entry in (yaml.safe_load(f.read_text()) or {}).items():
            if "{" in name:
                rx = re.compile(
                    "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^.]+)", re.escape(name)) + "$"
                )
                patterns.append((rx, entry))
            else:
                exact[name] = entry
    return exact, patterns


def _resolve(name: str, exact, patterns, data_root: str = SMOKE) -> str | None:
    """The file a dataset name resolves to, or None (memory, folder handle, no file)."""
    entry, groups = exact.get(name), {}
    if entry is None:
        for rx, candidate in patterns:
            if m := rx.match(name):
                entry, groups = candidate, m.groupdict()
                break
    if entry is None or "filepath" not in entry or "DirectoryDataset" in entry["type"]:
        return None
    return entry["filepath"].replace("${globals:data_root}", data_root).format(**groups)


def test_outs_are_exactly_the_catalog_files_each_slice_writes(smoke_project):
    project, text = smoke_project
    stages = _stages(text)
    exact, patterns = _catalog_paths(project)
    slices = {
        "ingest": ingest_pipeline(),
        "pretrain": pretrain_pipeline(),
        "finetune": finetune_pipeline(),
        "report": report_pipeline(),
    }
    for (pipe, ns), stage in stages.items():
        sub = slices[pipe] if ns is None else slices[pipe].only_nodes_with_namespaces([ns])
        expected = {_resolve(o, exact, patterns) for o in sub.all_outputs()} - {None}
        written = {
            p
            for key in ("outs", "metrics", "plots")
            for p, props in _paths(stage, key).items()
            if not (props or {}).get("persist")
        }
        assert written == expected, stage["name"]
        everything = " ".join([*_paths(stage, "deps"), *written])
        assert "train_state" not in everything and "node_timings" not in everything


def test_speech_cache_metrics_and_plots(smoke_project):
    project, text = smoke_project
    stages = _stages(text)
    smoke = yaml.safe_load((project / "conf/smoke/parameters_ingest.yml").read_text())
    cache_dir = smoke["speech"]["ingest"]["espeak"]["cache_dir"]
    outs = _paths(stages[("ingest", "speech")], "outs")
    for name in ("clips.safetensors", "clips.json"):
        assert outs[f"{cache_dir}/{name}"] == {"persist": True}
    assert not any("clips" in p for p in _paths(stages[("ingest", "image")], "outs"))
    report = stages[("report", None)]
    assert _paths(report, "metrics") == {f"{SMOKE}/08_reporting/metrics.json": {"cache": False}}
    assert _paths(report, "plots")[f"{SMOKE}/08_reporting/label_efficiency.csv"]["cache"] is False
    histories = _paths(stages[("pretrain", "text")], "plots")
    assert {p for p, o in histories.items() if o["cache"] is False} == {
        f"{SMOKE}/07_model_output/text/{m}/pretrain_history.csv" for m in PRETRAINED_METHODS
    }
    # the report reads every parameter (`parameters`) and conf/base: whole files are tracked
    assert _paths(report, "params")["conf/smoke/parameters_pretrain.yml"] is None


def test_check_passes_on_the_generated_file(smoke_project):
    project, _ = smoke_project
    assert dvc_sync.check(project, dvc_sync.SyncConfig(env="smoke")) == []


def test_check_names_a_catalog_output_missing_from_dvc_yaml(smoke_project, tmp_path):
    project, text = smoke_project
    target = f"{SMOKE}/05_model_input/text/tokenizer.json"
    assert f"    - {target}\n" in text
    broken = tmp_path / "dvc.yaml"
    broken.write_text(text.replace(f"    - {target}\n", ""))
    proc = _sync_cli(project, "--env", "smoke", "--check", "--output", str(broken))
    assert proc.returncode == 1
    assert f"outs: missing {target} (Kedro dataset text.tokenizer)" in proc.stderr
    assert "regenerate: python -m d2v_pipeline.dvc_sync --env smoke" in proc.stderr


def test_check_fails_on_a_new_kedro_output_and_a_moved_one(smoke_project, tmp_path, make_project):
    _, text = smoke_project
    project = make_project(tmp_path / "p")
    (project / "dvc.yaml").write_text(text)
    # an in-memory hand-over becomes a file (exact names win over factory patterns) ...
    (project / "conf/base/catalog_extra.yml").write_text(
        "image.source_data:\n  type: d2v_pipeline.datasets.JSONDataset\n"
        "  filepath: data/03_primary/image/source.json\n"
    )
    # ... and a catalog path moves
    catalog = project / "conf/base/catalog_ingest.yml"
    catalog.write_text(
        catalog.read_text().replace("{modality}/dataset_summary.json", "{modality}/summary.json")
    )
    problems = dvc_sync.check(project, dvc_sync.SyncConfig(env="smoke"))
    assert (
        "stage ingest-image: outs: missing data/03_primary/image/source.json "
        "(Kedro dataset image.source_data)"
    ) in problems
    assert any(f"outs: missing {SMOKE}/08_reporting/speech/summary.json" in p for p in problems)
    assert any(
        f"deps: unexpected {SMOKE}/08_reporting/text/dataset_summary.json" in p for p in problems
    )


def test_check_flags_uncached_metrics_that_git_ignores(smoke_project, tmp_path, make_project):
    _, text = smoke_project
    project = make_project(tmp_path / "p")
    (project / "dvc.yaml").write_text(text)
    (project / ".gitignore").write_text("data/**\n!data/**/\n")  # no `!` exceptions
    _git_init(project)
    problems = dvc_sync.check(project, dvc_sync.SyncConfig(env="smoke"))
    assert any(p.startswith(f"{SMOKE}/08_reporting/metrics.json: a cache: false") for p in problems)


def test_unknown_env_and_missing_params_are_named(smoke_project, tmp_path, make_project):
    project, _ = smoke_project
    with pytest.raises(dvc_sync.DvcSyncError, match="conf/nope"):
        dvc_sync.generate(project, dvc_sync.SyncConfig(env="nope"))
    other = make_project(tmp_path / "p")
    (other / "conf/base/parameters_report.yml").unlink()
    with pytest.raises(dvc_sync.DvcSyncError, match=r"params:report \(node report.summarise\)"):
        dvc_sync.generate(other)


def test_base_dvc_yaml_uses_the_base_data_root_whatever_conf_local_says(tmp_path, make_project):
    """dvc.yaml is generated with conf/base only: a user's conf/local/globals.yml moving
    their own runs elsewhere does not move the committed outs (always data/...)."""
    project = make_project(tmp_path / "p")
    (project / "conf/local/globals.yml").write_text("data_root: data/mine\n")
    text = dvc_sync.generate(project)
    outs = [
        p
        for stage in _stages(text).values()
        for key in ("outs", "metrics", "plots")
        for p in _paths(stage, key)
    ]
    assert "data/08_reporting/metrics.json" in outs
    elsewhere = [p for p in outs if not p.startswith("data/") or p.startswith(("data/mine", SMOKE))]
    assert elsewhere == []


# --------------------------------------------------------------------------- pure helpers


def test_code_dependencies_follow_imports_into_package_folders():
    deps = dvc_sync.code_dependencies(
        ["d2v_pipeline.pipelines.pretrain.nodes"], "d2v_pipeline", "src"
    )
    assert "src/d2v_pipeline/pipelines/pretrain" in deps
    assert "src/d2v_pipeline/data2vec" in deps  # imported by the nodes
    assert "src/d2v_pipeline/experiment.py" in deps
    assert not any(d.endswith(("reporting", "pipelines/tune", "dvc_sync.py")) for d in deps)


def test_identical_lanes_become_foreach_and_expand_back():
    def spec(pipe: str, ns: str, extra: list[str]) -> dvc_sync.StageSpec:
        s = dvc_sync.StageSpec(pipe, ns, f"kedro run --pipelines {pipe} --namespaces {ns}")
        s.outs = {f"data/{ns}/a.json": {}, **{p: {} for p in extra}}
        s.params = {"conf/base/p.yml": [f"{ns}.{pipe}"]}
        return s

    same = [spec("pretrain", m, []) for m in MODALITIES]
    doc = dvc_sync.assemble(same)
    assert doc["stages"]["pretrain"]["foreach"] == list(MODALITIES)
    assert dvc_sync.expand_stages(doc) == {f"pretrain@{s.namespace}": s.to_dvc() for s in same}
    mixed = [spec("ingest", m, ["data/text/tok.json"] if m == "text" else []) for m in MODALITIES]
    assert set(dvc_sync.assemble(mixed)["stages"]) == {f"ingest-{m}" for m in MODALITIES}
    assert dvc_sync.diff_stages(dvc_sync.expand_stages(doc), {}) == [
        f"stage pretrain@{m}: produced by Kedro but missing from dvc.yaml" for m in MODALITIES
    ]
