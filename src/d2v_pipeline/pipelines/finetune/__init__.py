"""Evaluation of every encoder: linear probes and fine-tuning at label fractions over seeds."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
