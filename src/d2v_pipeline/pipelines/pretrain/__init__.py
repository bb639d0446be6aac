"""Pretraining: one encoder per modality and method, from the unlabelled train split."""
