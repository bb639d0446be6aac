"""Evaluation library: frozen-feature linear probes, end-to-end fine-tuning, raw-input
baselines and metrics (spec §6 and §10). Plain PyTorch / numpy / scikit-learn; no Kedro."""

from d2v_pipeline.evaluation.features import (
    LAYER_MODES,
    POOL_MODES,
    extract_feature_sets,
    extract_features,
    masked_mean,
)
from d2v_pipeline.evaluation.finetune import (
    Classifier,
    FinetuneConfig,
    FinetuneResult,
    finetune,
    predict_classes,
)
from d2v_pipeline.evaluation.metrics import TIDY_COLUMNS, classification_metrics, tidy_rows
from d2v_pipeline.evaluation.probe import DEFAULT_CS, ProbeResult, linear_probe
from d2v_pipeline.evaluation.raw_baselines import (
    RawBaselineConfig,
    log_mel_features,
    mel_filterbank,
    raw_baseline,
    raw_features,
    tfidf_features,
)

__all__ = [
    "DEFAULT_CS",
    "LAYER_MODES",
    "POOL_MODES",
    "TIDY_COLUMNS",
    "Classifier",
    "FinetuneConfig",
    "FinetuneResult",
    "ProbeResult",
    "RawBaselineConfig",
    "classification_metrics",
    "extract_feature_sets",
    "extract_features",
    "finetune",
    "linear_probe",
    "log_mel_features",
    "masked_mean",
    "mel_filterbank",
    "predict_classes",
    "raw_baseline",
    "raw_features",
    "tfidf_features",
    "tidy_rows",
]
