"""Bad parameters stop a real Kedro run before any node runs, naming the file and the key.

Each case is one row of CASES: where the bad value is set (``--params`` or a file in the
copy's conf/local), the values, and the expected ``<file>: <key path>: <problem>`` line. The
run goes through ``KedroSession.create(...).run()`` (what ``kedro run`` calls) in a copy of
the project that already holds artefacts of an earlier run; afterwards every one of them has
its old bytes and nothing new was written (the parameter hook fires before the catalog, the
run-info hook and every node).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from artefact_check import assert_unchanged, snapshot
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from d2v_pipeline.schema import ParameterError

PARAMS = "--params"
LOCAL_PRETRAIN = "conf/local/parameters_pretrain.yml"
LOCAL_FINETUNE = "conf/local/parameters_finetune.yml"
LOCAL_RUNTIME = "conf/local/parameters_runtime.yml"

# (id, where the values are set, values, expected key path, expected problem)
CASES: list[tuple[str, str, dict[str, Any], str, str]] = [
    (
        "misspelt-block",
        PARAMS,
        {"image": {"pretrain": {"trian": {"steps": 500}}}},
        "image.pretrain.trian",
        "unknown key; did you mean 'train'?",
    ),
    (
        "unknown-key",
        PARAMS,
        {"image": {"pretrain": {"foo": 1}}},
        "image.pretrain.foo",
        "unknown key (known: data2vec, data2vec2, encoder,",
    ),
    (
        "unknown-method",
        PARAMS,
        {"image": {"pretrain": {"byol": {"top_k": 2}}}},
        "image.pretrain.byol",
        "unknown key",
    ),
    (
        "resume-not-boolean",
        PARAMS,
        {"speech": {"pretrain": {"resume": "maybe"}}},
        "speech.pretrain.resume",
        "'maybe' is not true/false",
    ),
    (
        "top-k-deeper-than-encoder",
        LOCAL_PRETRAIN,
        {"image": {"pretrain": {"encoder": {"depth": 2}, "data2vec": {"top_k": 3}}}},
        "image.pretrain.data2vec.top_k",
        "3 > encoder depth 2",
    ),
    (
        "ema-end-below-start",
        PARAMS,
        {"text": {"pretrain": {"data2vec": {"ema_end_decay": 0.9}}}},
        "text.pretrain.data2vec.ema_end_decay",
        "0.9 < ema_decay 0.99",
    ),
    (
        "float-steps",
        PARAMS,
        {"text": {"pretrain": {"train": {"steps": 1.5}}}},
        "text.pretrain.train.steps",
        "1.5 is not an integer",
    ),
    (
        "negative-lr",
        LOCAL_PRETRAIN,
        {"speech": {"pretrain": {"train": {"lr": -0.001}}}},
        "speech.pretrain.train.lr",
        "-0.001 is outside (0, inf]",
    ),
    (
        "heads-do-not-divide-dim",
        LOCAL_PRETRAIN,
        {"image": {"pretrain": {"encoder": {"heads": 3}}}},
        "image.pretrain.encoder.heads",
        "3 does not divide dim 128",
    ),
    (
        "probe-top-k-deeper-than-encoder",
        LOCAL_FINETUNE,
        {"image": {"finetune": {"probe": {"top_k": 9}}}},
        "image.finetune.probe.top_k",
        "9 > encoder depth 4",
    ),
    (
        "fraction-not-ingested",
        PARAMS,
        {"speech": {"finetune": {"fractions": [0.05, 1.0], "finetune_fractions": [1.0]}}},
        "speech.finetune.fractions",
        "[0.05] are not among ingest.label_fractions",
    ),
    (
        "seed-without-label-draw",
        PARAMS,
        {"text": {"finetune": {"seeds": [0, 1, 2, 3]}}},
        "text.finetune.seeds",
        "[3] >= ingest.label_subset_draws 3",
    ),
    (
        "splits-leave-no-train",
        PARAMS,
        {"image": {"ingest": {"val_fraction": 0.5, "test_fraction": 0.5}}},
        "image.ingest.test_fraction",
        "val_fraction + test_fraction = 1.0 leaves no train",
    ),
    (
        "breath-variant",
        PARAMS,
        {"speech": {"ingest": {"espeak": {"variants": ["m1", "whisper"]}}}},
        "speech.ingest.espeak.variants",
        "['whisper'] add random breath noise",
    ),
    (
        "unknown-sampler",
        PARAMS,
        {"image": {"tune": {"sampler": {"type": "grid"}}}},
        "image.tune.sampler.type",
        "'grid' is not one of 'tpe' or 'random'",
    ),
    (
        "report-confidence",
        PARAMS,
        {"report": {"confidence": 1.5}},
        "report.confidence",
        "1.5 is outside (0, 1)",
    ),
    (
        "unknown-top-level",
        PARAMS,
        {"imgae": {"pretrain": {"train": {"steps": 5}}}},
        "imgae",
        "unknown key; did you mean 'image'?",
    ),
    (
        "nan-value",
        PARAMS,
        {"image": {"finetune": {"finetune": {"lr": float("nan")}}}},
        "image.finetune.finetune.lr",
        "nan is not a finite number",
    ),
    (
        "runtime-precision-fp8",
        PARAMS,
        {"image": {"runtime": {"precision": "fp8"}}},
        "image.runtime.precision",
        "'fp8' is not one of 'fp32', 'bf16' or 'fp16'",
    ),
    (
        "runtime-no-processes",
        LOCAL_RUNTIME,
        {"speech": {"runtime": {"nproc_per_node": 0}}},
        "speech.runtime.nproc_per_node",
        "0 is outside [1, inf]",
    ),
    (
        "runtime-device-tpu",
        PARAMS,
        {"text": {"runtime": {"device": "tpu"}}},
        "text.runtime.device",
        "'tpu' is not one of 'auto', 'cpu', 'cuda' or 'mps'",
    ),
    (
        "runtime-fp16-on-cpu",
        LOCAL_RUNTIME,
        {"image": {"runtime": {"precision": "fp16"}}},
        "image.runtime.precision",
        "fp16 needs CUDA (device is 'cpu'); use bf16 on CPU",
    ),
    (
        "threads-in-the-old-place",
        LOCAL_PRETRAIN,
        {"text": {"pretrain": {"train": {"threads": 4}}}},
        "text.pretrain.train.threads",
        "unknown key; it moved to <m>.runtime.threads (parameters_runtime.yml)",
    ),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory, make_project) -> Path:
    """A project copy holding an earlier run's artefacts under its data root (data/)."""
    root = make_project(tmp_path_factory.mktemp("bad_params") / "project")
    tracking = root / "data" / "09_tracking"
    tracking.mkdir(parents=True)
    (tracking / "run_info.json").write_text(json.dumps({"env": None, "command": "kedro run"}))
    (tracking / "node_timings.json").write_text(json.dumps({"image.load_source": 1.0}))
    models = root / "data" / "06_models" / "image"
    models.mkdir(parents=True)
    (models / "data2vec_encoder.safetensors").write_bytes(bytes(range(256)) * 4)
    bootstrap_project(root)
    return root


@pytest.mark.parametrize(
    ("where", "values", "key", "problem"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_parameter_stops_the_run_before_any_node(
    project, artefacts, where, values, key, problem
):
    local = project / "conf" / "local"
    if where != PARAMS:
        (project / where).write_text(yaml.safe_dump(values))
    before = snapshot(project / "data", project / "conf", artefacts)
    try:
        with pytest.raises(ParameterError) as err:
            runtime = values if where == PARAMS else None
            with KedroSession.create(project_path=project, runtime_params=runtime) as session:
                session.run()
        lines = err.value.lines
        assert any(line.startswith(f"{where}: {key}: {problem}") for line in lines), lines
        assert "nothing was run" in str(err.value)
        assert_unchanged(before, project / "data", project / "conf", artefacts)
    finally:
        shutil.rmtree(local)
        local.mkdir()


def test_every_problem_is_reported_in_one_error(project, artefacts):
    """Several bad values from different files: one error, one line each, each with its file."""
    (project / LOCAL_PRETRAIN).write_text(yaml.safe_dump({"image": {"pretrain": {"foo": 1}}}))
    runtime = {"speech": {"pretrain": {"resume": "no"}}, "text": {"ingest": {"seq_len": 2}}}
    before = snapshot(project / "data", artefacts)
    try:
        with (
            pytest.raises(ParameterError) as err,
            KedroSession.create(project_path=project, runtime_params=runtime) as session,
        ):
            session.run()
    finally:
        (project / LOCAL_PRETRAIN).unlink()
    lines = err.value.lines
    assert len(lines) == 3, lines
    assert any(line.startswith(f"{LOCAL_PRETRAIN}: image.pretrain.foo: unknown") for line in lines)
    assert f"{PARAMS}: speech.pretrain.resume: 'no' is not true/false" in lines
    assert f"{PARAMS}: text.ingest.seq_len: 2 is outside [3, inf]" in lines
    assert_unchanged(before, project / "data", artefacts)


def test_table_has_at_least_twelve_distinct_cases():
    assert len({case[0] for case in CASES}) == len(CASES) >= 12
