"""Report settings (block `report` of conf/base/parameters_report.yml) as a dataclass.

The keys' types and ranges are declared once, in :mod:`d2v_pipeline.schema.report`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from d2v_pipeline.schema.check import validated

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

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    def protocol_label(self, protocol: str) -> str:
        return self.protocol_labels.get(protocol, protocol)


def report_config_from_dict(params: Mapping[str, Any] | None) -> ReportConfig:
    """Build a :class:`ReportConfig` from the ``report`` parameters block.

    Keys, types and ranges are :class:`d2v_pipeline.schema.report.Report`'s: a ValueError
    lists every problem as ``parameters_report.yml: report.<key>: <problem>``. Missing keys
    take the documented defaults; ``protocol_labels`` extends the default labels.
    """
    from d2v_pipeline.schema.report import Report  # here: it reads ReportConfig's defaults

    block = validated(Report, params, "report", "parameters_report.yml")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in block.model_dump().items()}
    values["protocol_labels"] = {**DEFAULT_PROTOCOL_LABELS, **values["protocol_labels"]}
    return ReportConfig(**values)
