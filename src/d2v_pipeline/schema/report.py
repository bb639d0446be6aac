"""``report`` (conf/base/parameters_report.yml): what the report shows and how (ReportConfig)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from d2v_pipeline.reporting.config import ReportConfig
from d2v_pipeline.schema.base import (
    Fraction,
    Interval,
    Items,
    LibraryBlock,
    NonNegative,
    PositiveInt,
    Text,
)

Names = Annotated[list[Text], Items(min=0)]


class Report(LibraryBlock):
    """Every key is optional; the modalities, methods, protocols and fractions shown come
    from the metrics tables, the lists below only set order and roles."""

    library = ReportConfig
    title: Text = Field(description="start of the title; the lanes and env that ran follow")
    headline_fraction: Fraction = Field(description="label fraction judged (closest if absent)")
    confidence: Annotated[float, Interval(0, 1, low_open=True, high_open=True)] = Field(
        description="level of the intervals on paired differences"
    )
    metrics: Annotated[list[Text], Items()] = Field(
        description="metric names; the first is the primary (headline, figures, deltas)"
    )
    method_order: Names = Field(description="display order; unlisted methods follow a-z")
    focus_methods: Names = Field(description="each compared with every method listed after it")
    protocol_order: Names = Field(description="display order of protocols")
    expected_protocols: Names = Field(description="a missing one is shown as 'not run'")
    context_protocols: Names = Field(description="raw-input baselines: context, never 'best'")
    headline_protocols: Names = Field(description="protocols the headline speaks about")
    reference_method: Text = Field(description="the headline table's 'Δ vs' column")
    protocol_labels: dict[str, Text] = Field(description="display names; extend the defaults")
    collapse_target_std: NonNegative = Field(description="collapse flag below this (spec §9)")
    collapse_pred_std: NonNegative = Field(description="collapse flag below this (spec §9)")
    max_projection_points: PositiveInt = Field(description="per method, in the PCA scatter")
    confusion_annotate_max_classes: PositiveInt = Field(description="annotate cells up to this")
    max_summary_rows: PositiveInt = Field(description="rows of each dataset summary shown")
    figures_dir: Text = Field(description="report.md links <figures_dir>/<name>.png")
    decimals: Annotated[int, Interval(0, 6)] = Field(description="decimals of accuracy points")
    scale_note: Text = Field(description="first item of 'Deviations from the paper'")
