"""Ingest: raw sources -> model_input arrays, splits, label subsets, dataset info and summary."""

from d2v_pipeline.pipelines.ingest.pipeline import create_pipeline

__all__ = ["create_pipeline"]
