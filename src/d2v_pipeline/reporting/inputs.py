"""The report's inputs, validated once, with errors that name the dataset, row and column.

Datasets arrive keyed by their catalog names (``image.eval_metrics``,
``image.data2vec.pretrain_history``, ``parameters``, ...), or a lane at a time: the report
pipeline bundles each lane's datasets with :func:`lane_inputs` (``image.report_inputs``).
Every per-modality input is optional (``None`` means "not produced": the report says "not
run"; a lane without eval_metrics did not run at all), but an input that is present and
malformed is an error: a report built on a half-read table would mislead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

EVAL_COLUMNS = ("modality", "method", "fraction", "seed", "protocol", "metric", "value")
HISTORY_REQUIRED = ("step", "loss")
HISTORY_OPTIONAL = ("lr", "tau", "target_std", "pred_std", "samples_per_s", "elapsed_s")
CURVES_REQUIRED = ("method", "fraction", "seed", "epoch", "val_accuracy")
PROJECTION_REQUIRED = ("method", "component_1", "component_2", "label")
PREDICTIONS_REQUIRED = ("method", "protocol", "fraction", "seed", "example", "label", "prediction")

MODALITY_DATASETS = (
    "dataset_summary",
    "eval_metrics",
    "eval_details",
    "finetune_curves",
    "feature_projection",
    "test_predictions",
)
RUN_DATASETS = ("pretrain_history", "pretrain_meta")
GLOBAL_DATASETS = (
    "parameters",
    "base_parameters",
    "node_timings",
    "time_to_accuracy",
    "run_info",
)
# one lane's datasets validated into one ModalityInputs (the report pipeline's lane bundles)
LANE_BUNDLE = "report_inputs"
MODALITY_ORDER = ("image", "speech", "text")


class ReportInputError(ValueError):
    """A report input is malformed; the message names the dataset (and row/column/key)."""


@dataclass
class PretrainRun:
    """One pretraining run (modality x method): its history table and metadata."""

    modality: str
    method: str
    history: pd.DataFrame | None = None
    meta: dict[str, Any] | None = None


@dataclass
class ModalityInputs:
    """Everything the report knows about one modality; ``None`` = not produced."""

    name: str
    eval_metrics: pd.DataFrame
    dataset_summary: dict[str, Any] | None = None
    eval_details: dict[str, Any] | None = None
    finetune_curves: pd.DataFrame | None = None
    feature_projection: pd.DataFrame | None = None
    # one row per test example x evaluation: method, protocol, fraction, seed, example,
    # label, prediction (the paired bootstrap over test examples resamples it)
    test_predictions: pd.DataFrame | None = None
    runs: dict[str, PretrainRun] = field(default_factory=dict)
    # inputs the report does not render yet (e.g. future ``tune_*`` tables), kept by name
    extras: dict[str, Any] = field(default_factory=dict)
    # the lane ran: its eval_metrics exist (a missing file loads as None)
    present: bool = True


@dataclass
class ReportInputs:
    """All validated inputs of one report: the lanes that ran, and the ones that did not."""

    modalities: dict[str, ModalityInputs]
    parameters: dict[str, Any] | None = None
    base_parameters: dict[str, Any] | None = None
    node_timings: dict[str, float] | None = None
    git_commit: str | None = None
    # benchmarks/results/time_to_accuracy.json (benchmarks/time_to_accuracy.py), if run
    time_to_accuracy: dict[str, Any] | None = None
    # data/09_tracking/run_info.json, written at the start of each `kedro run` (None: old run)
    run_info: dict[str, Any] | None = None
    # lanes the report expected but whose eval_metrics do not exist (not run yet)
    missing_lanes: tuple[str, ...] = ()


def lane_inputs(modality: str, datasets: Mapping[str, Any]) -> ModalityInputs:
    """Validate one lane's datasets into a :class:`ModalityInputs`.

    ``datasets`` are keyed by their names inside the lane: ``eval_metrics``, ...,
    ``<method>.pretrain_history``, ``<method>.pretrain_meta``, ``tune_<name>``; errors name
    the full catalog name (``image.eval_metrics``). The lane is ``present`` when its
    eval_metrics exist (not ``None``).
    """
    lane = ModalityInputs(name=modality, eval_metrics=empty_eval_metrics())
    lane.present = datasets.get("eval_metrics") is not None
    for key in sorted(datasets):
        value, name, parts = datasets[key], f"{modality}.{key}", key.split(".")
        if len(parts) == 1 and key in MODALITY_DATASETS:
            setattr(lane, key, _VALIDATORS[key](value, name, modality))
        elif len(parts) == 1 and key.startswith("tune_"):
            lane.extras[key] = value
        elif len(parts) == 2 and parts[1] in RUN_DATASETS:
            run = lane.runs.setdefault(parts[0], PretrainRun(modality=modality, method=parts[0]))
            if parts[1] == "pretrain_history":
                run.history = validate_history(value, name)
            else:
                run.meta = validate_meta(value, name)
        else:
            raise ReportInputError(
                f"report: unexpected input dataset {name!r}; expected '<modality>.<"
                + "|".join(MODALITY_DATASETS)
                + ">', '<modality>.<method>.<pretrain_history|pretrain_meta>' or "
                "'<modality>.tune_<name>'"
            )
    return lane


def gather_inputs(datasets: Mapping[str, Any], *, git_commit: str | None = None) -> ReportInputs:
    """Sort catalog datasets by name into :class:`ReportInputs`, validating each.

    Accepted names: the globals (``parameters``, ``base_parameters``, ``node_timings``,
    ``time_to_accuracy``, ``run_info``), a lane bundle ``<m>.report_inputs`` (a
    :class:`ModalityInputs` from :func:`lane_inputs`), or a lane's own datasets
    ``<m>.{dataset_summary,eval_metrics,...}``, ``<m>.<method>.{pretrain_history,
    pretrain_meta}`` and ``<m>.tune_*`` (kept for later). Any other name is an error, so a
    wiring mistake does not silently drop a table. Lanes without eval_metrics are listed in
    ``missing_lanes`` and left out of ``modalities``.
    """
    lanes: dict[str, ModalityInputs] = {}
    raw: dict[str, dict[str, Any]] = {}
    globals_: dict[str, Any] = {}
    for key in sorted(datasets):
        value, parts = datasets[key], key.split(".", 1)
        if len(parts) == 1 and key in GLOBAL_DATASETS:
            globals_[key] = value
        elif len(parts) == 2 and parts[1] == LANE_BUNDLE:
            if not isinstance(value, ModalityInputs) or value.name != parts[0]:
                raise ReportInputError(
                    f"{key}: expected the {parts[0]} lane's ModalityInputs bundle, got "
                    f"{getattr(value, 'name', type(value).__name__)!r}"
                )
            lanes[parts[0]] = value
        elif len(parts) == 2:
            raw.setdefault(parts[0], {})[parts[1]] = value
        else:
            raise ReportInputError(
                f"report: unexpected input dataset {key!r}; expected one of {GLOBAL_DATASETS}, "
                "'<modality>.report_inputs' or a lane dataset '<modality>.<name>'"
            )
    for modality, lane_datasets in raw.items():
        if modality in lanes:
            raise ReportInputError(
                f"report: lane {modality!r} given both as a bundle and as datasets "
                f"{sorted(lane_datasets)}"
            )
        lanes[modality] = lane_inputs(modality, lane_datasets)
    order = _ordered(lanes)
    return ReportInputs(
        modalities={m: lanes[m] for m in order if lanes[m].present},
        parameters=_optional_dict(globals_.get("parameters"), "parameters"),
        base_parameters=_optional_dict(globals_.get("base_parameters"), "base_parameters"),
        node_timings=validate_node_timings(globals_.get("node_timings"), "node_timings"),
        git_commit=git_commit,
        time_to_accuracy=validate_time_to_accuracy(
            globals_.get("time_to_accuracy"), "time_to_accuracy"
        ),
        run_info=validate_run_info(globals_.get("run_info"), "run_info"),
        missing_lanes=tuple(m for m in order if not lanes[m].present),
    )


def _ordered(names: Iterable[str]) -> list[str]:
    names = set(names)
    return [m for m in MODALITY_ORDER if m in names] + sorted(names - set(MODALITY_ORDER))


def empty_eval_metrics() -> pd.DataFrame:
    """An eval_metrics table with no rows (a modality whose evaluation did not run)."""
    return pd.DataFrame(
        {
            "modality": pd.Series(dtype=str),
            "method": pd.Series(dtype=str),
            "fraction": pd.Series(dtype=float),
            "seed": pd.Series(dtype=int),
            "protocol": pd.Series(dtype=str),
            "metric": pd.Series(dtype=str),
            "value": pd.Series(dtype=float),
        }
    )


def _where(name: str, index: int) -> str:
    # row index of the data (0-based) and its line in the CSV file (header = line 1)
    return f"{name}: row {index} (CSV line {index + 2})"


def _require_frame(value: Any, name: str, required: tuple[str, ...]) -> pd.DataFrame:
    if not isinstance(value, pd.DataFrame):
        raise ReportInputError(f"{name}: expected a table (DataFrame), got {type(value).__name__}")
    missing = [c for c in required if c not in value.columns]
    if missing:
        raise ReportInputError(
            f"{name}: missing column(s) {missing}; has {list(map(str, value.columns))}"
        )
    return value.reset_index(drop=True).copy()


def _numeric(df: pd.DataFrame, column: str, name: str, *, allow_nan: bool) -> pd.Series:
    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna() & df[column].notna() & (df[column].astype(str).str.strip() != "")
    if not allow_nan:
        bad |= values.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ReportInputError(
            f"{_where(name, i)}: column {column!r} has {df[column].iloc[i]!r}, expected a number"
        )
    return values.astype(float)


def _text(df: pd.DataFrame, column: str, name: str) -> pd.Series:
    missing = df[column].isna() | (df[column].astype(str).str.strip() == "")
    if missing.any():
        i = int(np.flatnonzero(missing.to_numpy())[0])
        raise ReportInputError(f"{_where(name, i)}: column {column!r} is empty")
    return df[column].astype(str).str.strip()


def validate_eval_metrics(value: Any, name: str, modality: str) -> pd.DataFrame:
    """Tidy metrics: typed columns, values in [0, 1], one value per key, modality matches."""
    if value is None:
        return empty_eval_metrics()
    df = _require_frame(value, name, EVAL_COLUMNS)
    if df.empty:
        return empty_eval_metrics()
    for column in ("modality", "method", "protocol", "metric"):
        df[column] = _text(df, column, name)
    df["fraction"] = _numeric(df, "fraction", name, allow_nan=False)
    df["value"] = _numeric(df, "value", name, allow_nan=False)
    seeds = _numeric(df, "seed", name, allow_nan=False)
    for i, (frac, seed, val, mod) in enumerate(
        zip(df["fraction"], seeds, df["value"], df["modality"], strict=True)
    ):
        if not 0 < frac <= 1:
            raise ReportInputError(f"{_where(name, i)}: fraction {frac} is outside (0, 1]")
        if seed != int(seed):
            raise ReportInputError(f"{_where(name, i)}: seed {seed} is not an integer")
        if not 0 <= val <= 1:
            raise ReportInputError(f"{_where(name, i)}: value {val} is outside [0, 1]")
        if mod != modality:
            raise ReportInputError(
                f"{_where(name, i)}: modality {mod!r} does not match the dataset's modality "
                f"{modality!r}"
            )
    df["seed"] = seeds.astype(int)
    key = ["method", "fraction", "seed", "protocol", "metric"]
    dup = df.duplicated(key, keep="first")
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        row = df.loc[i, key].to_dict()
        raise ReportInputError(f"{_where(name, i)}: duplicate result for {row}")
    return df[list(EVAL_COLUMNS)]


def validate_history(value: Any, name: str) -> pd.DataFrame | None:
    """Pretraining history: ``step`` and ``loss`` required, known optional columns numeric."""
    if value is None:
        return None
    df = _require_frame(value, name, HISTORY_REQUIRED)
    df["step"] = _numeric(df, "step", name, allow_nan=False)
    # loss may be NaN on a diverged step; the figure shows the gap
    for column in ("loss", *HISTORY_OPTIONAL):
        if column in df.columns:
            df[column] = _numeric(df, column, name, allow_nan=True)
    return df.sort_values("step", kind="stable").reset_index(drop=True)


def validate_meta(value: Any, name: str) -> dict[str, Any] | None:
    """Pretraining metadata: a JSON object; typed checks only on the keys the report uses."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ReportInputError(f"{name}: expected a JSON object, got {type(value).__name__}")
    meta = dict(value)
    if "collapsed" in meta and meta["collapsed"] is not None:
        if not isinstance(meta["collapsed"], bool | np.bool_):
            raise ReportInputError(
                f"{name}: key 'collapsed' must be true/false, got {meta['collapsed']!r}"
            )
        meta["collapsed"] = bool(meta["collapsed"])
    for key in ("wall_time_s", "final_loss", "final_target_std", "final_pred_std", "steps"):
        v = meta.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise ReportInputError(f"{name}: key {key!r} must be a number, got {v!r}")
    deviations = meta.get("deviations")
    if deviations is not None and (
        not isinstance(deviations, list) or not all(isinstance(d, str) for d in deviations)
    ):
        raise ReportInputError(f"{name}: key 'deviations' must be a list of strings")
    for key in ("environment", "config"):
        if meta.get(key) is not None and not isinstance(meta[key], Mapping):
            raise ReportInputError(f"{name}: key {key!r} must be a JSON object")
    return meta


def validate_eval_details(value: Any, name: str, modality: str = "") -> dict[str, Any] | None:
    """Class names and confusion matrices ``{method: {protocol: {fraction: [[int]]}}}``."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ReportInputError(f"{name}: expected a JSON object, got {type(value).__name__}")
    class_names = value.get("class_names")
    if class_names is not None and not isinstance(class_names, list):
        raise ReportInputError(f"{name}: key 'class_names' must be a list")
    confusion = value.get("confusion") or {}
    if not isinstance(confusion, Mapping):
        raise ReportInputError(f"{name}: key 'confusion' must be a JSON object")
    checked: dict[str, dict[str, dict[str, list[list[int]]]]] = {}
    for method, by_protocol in confusion.items():
        if not isinstance(by_protocol, Mapping):
            raise ReportInputError(f"{name}: confusion.{method} must be a JSON object")
        for protocol, by_fraction in by_protocol.items():
            if not isinstance(by_fraction, Mapping):
                raise ReportInputError(
                    f"{name}: confusion.{method}.{protocol} must be a JSON object"
                )
            for frac, matrix in by_fraction.items():
                where = f"{name}: confusion.{method}.{protocol}.{frac}"
                try:
                    float(frac)
                except ValueError:
                    raise ReportInputError(f"{where}: key is not a label fraction") from None
                arr = np.asarray(matrix, dtype=object)
                if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
                    raise ReportInputError(f"{where}: expected a square matrix of counts")
                try:
                    counts = np.asarray(matrix, dtype=float)
                except (TypeError, ValueError):
                    raise ReportInputError(f"{where}: entries must be counts") from None
                if (counts < 0).any() or not np.all(np.mod(counts, 1) == 0):
                    raise ReportInputError(f"{where}: entries must be non-negative integers")
                if class_names is not None and len(class_names) != counts.shape[0]:
                    raise ReportInputError(
                        f"{where}: {counts.shape[0]} classes but class_names has {len(class_names)}"
                    )
                checked.setdefault(str(method), {}).setdefault(str(protocol), {})[str(frac)] = (
                    counts.astype(int).tolist()
                )
    return {**dict(value), "confusion": checked}


def validate_curves(value: Any, name: str, modality: str = "") -> pd.DataFrame | None:
    """Fine-tuning curves: one row per method x fraction x seed x epoch."""
    if value is None:
        return None
    df = _require_frame(value, name, CURVES_REQUIRED)
    df["method"] = _text(df, "method", name)
    for column in ("fraction", "seed", "epoch"):
        df[column] = _numeric(df, column, name, allow_nan=False)
    df["val_accuracy"] = _numeric(df, "val_accuracy", name, allow_nan=True)
    if "train_loss" in df.columns:
        df["train_loss"] = _numeric(df, "train_loss", name, allow_nan=True)
    return df


def validate_projection(value: Any, name: str, modality: str = "") -> pd.DataFrame | None:
    """2-D feature projection: method, component_1, component_2, label."""
    if value is None:
        return None
    df = _require_frame(value, name, PROJECTION_REQUIRED)
    df["method"] = _text(df, "method", name)
    for column in ("component_1", "component_2"):
        df[column] = _numeric(df, column, name, allow_nan=False)
    if df["label"].isna().any():
        i = int(np.flatnonzero(df["label"].isna().to_numpy())[0])
        raise ReportInputError(f"{_where(name, i)}: column 'label' is empty")
    return df


def validate_predictions(value: Any, name: str, modality: str = "") -> pd.DataFrame | None:
    """Per-example test predictions: integer example, label and prediction per evaluation."""
    if value is None:
        return None
    df = _require_frame(value, name, PREDICTIONS_REQUIRED)
    for column in ("method", "protocol"):
        df[column] = _text(df, column, name)
    df["fraction"] = _numeric(df, "fraction", name, allow_nan=False)
    for column in ("seed", "example", "label", "prediction"):
        df[column] = _numeric(df, column, name, allow_nan=False).astype(np.int64)
    keys = ["method", "protocol", "fraction", "seed", "example"]
    dup = df.duplicated(keys)
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise ReportInputError(f"{_where(name, i)}: duplicate row for {dict(df.loc[i, keys])}")
    return df


def validate_summary(value: Any, name: str, modality: str = "") -> dict[str, Any] | None:
    """Dataset summary: any JSON object (keys are shown as they come)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ReportInputError(f"{name}: expected a JSON object, got {type(value).__name__}")
    return dict(value)


def validate_node_timings(value: Any, name: str) -> dict[str, float] | None:
    """``{node_name: seconds}``; a non-numeric or negative time is an error naming the node."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ReportInputError(f"{name}: expected a JSON object, got {type(value).__name__}")
    out: dict[str, float] = {}
    for node, seconds in value.items():
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ReportInputError(f"{name}: node {node!r} has {seconds!r}, expected seconds")
        if not math.isfinite(seconds) or seconds < 0:
            raise ReportInputError(f"{name}: node {node!r} has invalid time {seconds!r}")
        out[str(node)] = float(seconds)
    return out


def validate_time_to_accuracy(value: Any, name: str) -> dict[str, Any] | None:
    """The time-to-accuracy benchmark JSON, or None when it was not run (missing or ``{}``).

    Every run needs ``modality``, ``method`` and ``points`` (each with ``train_s`` and
    ``final.test_accuracy``); ``random_init`` maps a modality to its t = 0 probe. An error
    names the run and the key.
    """
    if value is None or (isinstance(value, Mapping) and not value):
        return None
    if not isinstance(value, Mapping):
        raise ReportInputError(f"{name}: expected a JSON object, got {type(value).__name__}")
    runs = value.get("runs")
    if not isinstance(runs, list) or not isinstance(value.get("random_init"), Mapping):
        raise ReportInputError(f"{name}: expected a 'runs' list and a 'random_init' object")
    for i, run in enumerate(runs):
        where = f"{name}: runs[{i}]"
        if not isinstance(run, Mapping) or not {"modality", "method", "points"} <= set(run):
            raise ReportInputError(f"{where} needs 'modality', 'method' and 'points'")
        for j, point in enumerate(run["points"]):
            try:
                seconds = float(point["train_s"])
                acc = float(point["final"]["test_accuracy"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ReportInputError(
                    f"{where}.points[{j}] needs numeric 'train_s' and 'final.test_accuracy'"
                ) from exc
            if not (math.isfinite(seconds) and 0.0 <= acc <= 1.0):
                raise ReportInputError(
                    f"{where}.points[{j}]: train_s {seconds!r} / accuracy {acc!r} out of range"
                )
    return dict(value)


# run_info keys (written by d2v_pipeline.hooks) and the JSON types each may have
RUN_INFO_TYPES: dict[str, tuple[type, ...]] = {
    "env": (str,),
    "command": (str,),
    "started_at": (str,),
    "git_commit": (str, type(None)),
    "git_clean": (bool, type(None)),
    "git_changes": (list,),
    "git_changes_total": (int,),
    "data_root": (str,),
    "kedro_version": (str,),
}


def validate_run_info(value: Any, name: str) -> dict[str, Any] | None:
    """The run's identity (env, command, start time, git state), or None when not recorded
    (missing or ``{}``: a run from before the hook existed). Known keys are type-checked,
    and an error names the key and its value; unknown keys are kept."""
    if value is None or (isinstance(value, Mapping) and not value):
        return None
    if not isinstance(value, Mapping):
        raise ReportInputError(f"{name}: expected a JSON object, got {type(value).__name__}")
    for key, types in RUN_INFO_TYPES.items():
        if key not in value:
            continue
        v = value[key]
        # bool is an int in Python, but true is not a count in JSON
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ReportInputError(f"{name}: key {key!r} must be {expected}, got {v!r}")
    changes = value.get("git_changes") or []
    if not all(isinstance(c, str) for c in changes):
        raise ReportInputError(f"{name}: key 'git_changes' must be a list of paths")
    return dict(value)


def _optional_dict(value: Any, name: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ReportInputError(f"{name}: expected a mapping, got {type(value).__name__}")
    return dict(value)


_VALIDATORS = {
    "dataset_summary": validate_summary,
    "eval_metrics": validate_eval_metrics,
    "eval_details": validate_eval_details,
    "finetune_curves": validate_curves,
    "feature_projection": validate_projection,
    "test_predictions": validate_predictions,
}
