"""Report pipeline: every modality's metrics, histories and metadata -> report.html,
report.md, metrics.json, label_efficiency.csv and figures/."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
