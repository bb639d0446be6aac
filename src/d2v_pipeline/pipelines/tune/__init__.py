"""Tuning: an Optuna study per modality over data2vec's EMA decays, mask ratio and top-K."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
