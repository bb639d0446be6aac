"""Kedro pipelines: one folder per stage, each wiring three modality lanes."""
