"""Evaluation of every encoder: linear probes and fine-tuning at label fractions over seeds."""
