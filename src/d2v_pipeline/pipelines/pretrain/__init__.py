"""Pretraining: one encoder per modality and method, from the unlabelled train split."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
