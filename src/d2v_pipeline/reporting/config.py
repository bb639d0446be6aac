"""Report settings (block `report` of conf/base/parameters_report.yml) as a dataclass."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PROTOCOL_LABELS = {
    "probe_final": "linear probe (final layer)",
    "probe_topk": "linear probe (top-K layers)",
    "finetune": "fine-tuning",
    "raw_probe": "raw-input probe",
}

DEFAULT_SCALE_NOTE = (
    "Everything here is tiny-scale: small encoders, a few thousand CPU updates and small "
    "datasets, against the paper's Base/Large models trained for 400k-1M updates on GPUs. "
    "Numbers are comparable between arms of this run, not with the paper."
)


@dataclass(frozen=True)
class ReportConfig:
    """What the report shows and how; every field is a key under ``report:`` in the parameters."""

    # the title starts with this; the lanes and the environment that ran are appended
    title: str = "data2vec vs baselines"
    # the label fraction the headline judges (the closest present one is used if absent)
    headline_fraction: float = 0.1
    # level of the confidence intervals on differences (two-sided t-interval)
    confidence: float = 0.95
    # metric names in eval_metrics; the first one is the primary metric (headline, figures)
    metrics: tuple[str, ...] = ("accuracy", "macro_f1")
    # preferred display order; methods not listed follow alphabetically
    method_order: tuple[str, ...] = (
        "data2vec2",
        "data2vec",
        "masked_recon",
        "scratch",
        "raw_input",
    )
    # methods judged against every method listed after them (the data2vec family)
    focus_methods: tuple[str, ...] = ("data2vec2", "data2vec")
    protocol_order: tuple[str, ...] = ("probe_final", "probe_topk", "finetune", "raw_probe")
    # protocols every modality should have: a missing one is reported as "not run"
    expected_protocols: tuple[str, ...] = ("probe_final", "probe_topk", "finetune", "raw_probe")
    # protocols shown as context (raw-input baselines): never "best", compared across protocols
    context_protocols: tuple[str, ...] = ("raw_probe",)
    # protocols the headline speaks about
    headline_protocols: tuple[str, ...] = ("probe_final", "probe_topk", "finetune")
    # the no-pretraining baseline the headline table measures every method against
    reference_method: str = "scratch"
    protocol_labels: Mapping[str, str] = field(
        default_factory=lambda: dict(DEFAULT_PROTOCOL_LABELS)
    )
    # spec §9: fairseq aborts when target std < 0.1 or prediction std < 0.01
    collapse_target_std: float = 0.1
    collapse_pred_std: float = 0.01
    max_projection_points: int = 2000
    confusion_annotate_max_classes: int = 12
    max_summary_rows: int = 60
    # where report.md finds the PNGs, relative to report.md
    figures_dir: str = "figures"
    # decimals of accuracy points (0..100) in tables and text
    decimals: int = 1
    scale_note: str = DEFAULT_SCALE_NOTE

    def __post_init__(self) -> None:
        if not 0 < self.confidence < 1:
            raise ValueError(f"report.confidence must be in (0, 1), got {self.confidence}")
        if not 0 < self.headline_fraction <= 1:
            raise ValueError(
                f"report.headline_fraction must be in (0, 1], got {self.headline_fraction}"
            )
        if not self.metrics:
            raise ValueError("report.metrics must name at least one metric")
        for name in ("max_projection_points", "confusion_annotate_max_classes", "max_summary_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"report.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.decimals <= 6:
            raise ValueError(f"report.decimals must be in 0..6, got {self.decimals}")
        for name in ("collapse_target_std", "collapse_pred_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"report.{name} must be >= 0, got {getattr(self, name)}")

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    def protocol_label(self, protocol: str) -> str:
        return self.protocol_labels.get(protocol, protocol)


_TUPLE_FIELDS = {
    f.name
    for f in dataclasses.fields(ReportConfig)
    if str(f.type).startswith("tuple")  # annotations are strings (postponed evaluation)
}


def report_config_from_dict(params: Mapping[str, Any] | None) -> ReportConfig:
    """Build a :class:`ReportConfig` from the ``report`` parameters block.

    Unknown keys and wrongly typed values are errors naming ``report.<key>``; missing keys
    take the documented defaults; ``protocol_labels`` extends the default labels.
    """
    params = dict(params or {})
    known = {f.name for f in dataclasses.fields(ReportConfig)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"report: unknown key(s) {unknown}; known keys: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for key, value in params.items():
        if key in _TUPLE_FIELDS:
            kwargs[key] = _as_str_tuple(key, value)
        elif key == "protocol_labels":
            if not isinstance(value, Mapping):
                raise ValueError(f"report.protocol_labels must be a mapping, got {value!r}")
            kwargs[key] = {**DEFAULT_PROTOCOL_LABELS, **{str(k): str(v) for k, v in value.items()}}
        else:
            default = getattr(ReportConfig, key)
            kwargs[key] = _coerce(key, value, type(default))
    return ReportConfig(**kwargs)


def _as_str_tuple(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"report.{key} must be a list of names, got {value!r}")
    return tuple(str(v) for v in value)


def _coerce(key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    raise ValueError(f"report.{key} must be a {kind.__name__}, got {value!r}")
