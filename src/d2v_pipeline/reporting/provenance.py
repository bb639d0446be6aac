"""Provenance: what produced these numbers (commit, parameter changes, data hashes,
environment, node wall times, collapse flags, deviations from the paper)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from d2v_pipeline.reporting.inputs import ReportInputs
from d2v_pipeline.reporting.stats import ordered

_MISSING = object()


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> ``{"a.b.c": leaf}``; lists and scalars are leaves; an empty
    mapping is kept as a leaf so that adding or removing a block still shows."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    # 1 and 1.0 from YAML are the same setting; lists compare element-wise
    return a == b


@dataclass(frozen=True)
class ParamChange:
    """One flat parameter key whose run value differs from conf/base."""

    key: str
    run_value: Any
    base_value: Any

    @staticmethod
    def show(value: Any) -> str:
        if value is _MISSING:
            return "(absent)"
        return json.dumps(value, default=str, ensure_ascii=False)

    @property
    def run_text(self) -> str:
        return self.show(self.run_value)

    @property
    def base_text(self) -> str:
        return self.show(self.base_value)


def params_diff(run: Mapping[str, Any], base: Mapping[str, Any]) -> list[ParamChange]:
    """Flat keys whose values differ between the run's and conf/base parameters, sorted
    (keys present on one side only are listed with ``(absent)`` on the other)."""
    flat_run, flat_base = flatten(run), flatten(base)
    changes = []
    for key in sorted(set(flat_run) | set(flat_base)):
        a, b = flat_run.get(key, _MISSING), flat_base.get(key, _MISSING)
        if a is _MISSING or b is _MISSING or not _same(a, b):
            changes.append(ParamChange(key, a, b))
    return changes


def timings_rows(timings: Mapping[str, float]) -> tuple[list[tuple[str, float, float]], float]:
    """``[(node, seconds, share of total)]`` slowest first, and the total."""
    total = float(sum(timings.values()))
    rows = sorted(timings.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(n, s, (s / total if total > 0 else math.nan)) for n, s in rows], total


@dataclass(frozen=True)
class RunStatus:
    """Collapse status of one pretraining run (spec §9)."""

    modality: str
    method: str
    collapsed: bool | None
    collapse_step: Any
    final_target_std: float | None
    final_pred_std: float | None
    steps: Any
    wall_time_s: float | None


def run_statuses(inputs: ReportInputs, method_order: tuple[str, ...]) -> list[RunStatus]:
    """Collapse flags and final stds per pretraining run; falls back to the history's
    last row when the metadata lacks the final values."""
    out = []
    for modality in ordered(inputs.modalities, ("image", "speech", "text")):
        runs = inputs.modalities[modality].runs
        for method in ordered(runs, method_order):
            run = runs[method]
            meta = run.meta or {}
            last: dict[str, Any] = {}
            if run.history is not None and not run.history.empty:
                last = run.history.iloc[-1].to_dict()
            out.append(
                RunStatus(
                    modality=modality,
                    method=method,
                    collapsed=meta.get("collapsed"),
                    collapse_step=meta.get("collapse_step"),
                    final_target_std=_first(meta.get("final_target_std"), last.get("target_std")),
                    final_pred_std=_first(meta.get("final_pred_std"), last.get("pred_std")),
                    steps=_first(meta.get("steps"), last.get("step")),
                    wall_time_s=_first(meta.get("wall_time_s"), last.get("elapsed_s")),
                )
            )
    return out


def _first(*values: Any) -> Any:
    for v in values:
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            return v
    return None


def environment_rows(inputs: ReportInputs) -> list[tuple[str, str]]:
    """Environment facts (flattened ``environment`` of every run's metadata); a key whose
    value differs between runs lists each value with its runs."""
    values: dict[str, dict[str, list[str]]] = {}
    for modality, mi in inputs.modalities.items():
        for method, run in mi.runs.items():
            env = (run.meta or {}).get("environment")
            if not env:
                continue
            for key, value in flatten(env).items():
                shown = json.dumps(value, default=str) if not isinstance(value, str) else value
                values.setdefault(key, {}).setdefault(shown, []).append(f"{modality}/{method}")
    rows = []
    for key in sorted(values):
        by_value = values[key]
        if len(by_value) == 1:
            rows.append((key, next(iter(by_value))))
        else:
            rows.append(
                (key, "; ".join(f"{v} ({', '.join(sorted(r))})" for v, r in by_value.items()))
            )
    return rows


def data_hash_rows(inputs: ReportInputs) -> list[tuple[str, str, str, str]]:
    """``(modality, source, dataset content_hash, the pretraining runs' data_hash)``; each
    hash is written once: runs that trained on the dataset's own hash say "same"."""
    rows = []
    for modality in ordered(inputs.modalities, ("image", "speech", "text")):
        mi = inputs.modalities[modality]
        summary = mi.dataset_summary or {}
        content = _text(summary.get("content_hash"))
        by_hash: dict[str, list[str]] = {}
        for method, run in sorted(mi.runs.items()):
            if run.meta is not None:
                by_hash.setdefault(_text(run.meta.get("data_hash")), []).append(method)
        runs = "; ".join(
            f"{', '.join(methods)}: " + ("same" if h == content != "-" else h)
            for h, methods in by_hash.items()
        )
        rows.append((modality, _text(summary.get("source")), content, runs or "-"))
    return rows


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def run_commits(inputs: ReportInputs) -> list[tuple[str, str]]:
    """Git commits recorded in the pretraining metadata: ``(commit, runs)``."""
    seen: dict[str, list[str]] = {}
    for modality, mi in inputs.modalities.items():
        for method, run in mi.runs.items():
            commit = ((run.meta or {}).get("environment") or {}).get("git_commit")
            if commit:
                seen.setdefault(str(commit), []).append(f"{modality}/{method}")
    return [(c, ", ".join(sorted(r))) for c, r in seen.items()]
