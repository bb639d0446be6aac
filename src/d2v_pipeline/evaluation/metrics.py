"""Classification metrics and the tidy metric rows every evaluation protocol reports.

One row per (modality, method, fraction, seed, protocol, metric) so the report can
group, average over seeds and plot without knowing which protocol produced a number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

TIDY_COLUMNS = ("modality", "method", "fraction", "seed", "protocol", "metric", "value")


def _as_label_array(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class ids, got shape {arr.shape}")
    # integer-valued floats (e.g. from a CSV round trip) are accepted, fractions are not
    if (
        arr.size
        and not np.issubdtype(arr.dtype, np.integer)
        and not (np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0))
    ):
        raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts; rows are true classes, columns predictions."""
    t = _as_label_array(y_true, "y_true")
    p = _as_label_array(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    for name, arr in (("y_true", t), ("y_pred", p)):
        bad = (arr < 0) | (arr >= num_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{name}[{i}] = {arr[i]} is outside the class range 0..{num_classes - 1}"
            )
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def macro_f1_from_confusion(cm: np.ndarray) -> float:
    """Unweighted mean F1 over classes that occur in the labels or the predictions.

    Classes absent from both are skipped (sklearn's default label set), so a test split
    that lacks a class is not penalised for it; a class that is predicted but never true
    (or true but never predicted) counts with F1 = 0.
    """
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    present = (support + predicted) > 0
    if not present.any():
        return 0.0
    denom = support + predicted
    f1 = np.divide(2.0 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[present].mean())


def classification_metrics(y_true: Any, y_pred: Any, num_classes: int) -> dict[str, Any]:
    """Accuracy, macro-F1 and the confusion matrix (nested lists, rows = true class).

    Args:
        y_true: true class ids, shape (N,).
        y_pred: predicted class ids, shape (N,).
        num_classes: C; every id must lie in 0..C-1.
    Returns:
        ``{"accuracy", "macro_f1", "confusion", "n"}``.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    n = int(cm.sum())
    if n == 0:
        raise ValueError("cannot compute metrics on an empty set of predictions")
    return {
        "accuracy": float(np.trace(cm) / n),
        "macro_f1": macro_f1_from_confusion(cm),
        "confusion": cm.tolist(),
        "n": n,
    }


def tidy_rows(
    metrics: Mapping[str, Any],
    *,
    modality: str,
    method: str,
    fraction: float,
    seed: int,
    protocol: str,
    include: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Turn a metrics dict into long-format rows (modality, method, fraction, seed, protocol,
    metric, value).

    Only scalar numbers become rows (the confusion matrix, curves and strings are
    skipped); ``include`` restricts and orders the metric names, and names a missing one
    as an error.
    """
    if include is not None:
        missing = [k for k in include if k not in metrics]
        if missing:
            raise KeyError(f"metrics has no key(s) {missing}; available: {sorted(metrics)}")
        keys = list(include)
    else:
        keys = list(metrics)
    rows = []
    for key in keys:
        value = metrics[key]
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            if include is not None:
                raise TypeError(f"metric {key!r} is not a scalar number: {type(value).__name__}")
            continue
        rows.append(
            {
                "modality": modality,
                "method": method,
                "fraction": float(fraction),
                "seed": int(seed),
                "protocol": protocol,
                "metric": key,
                "value": float(value),
            }
        )
    return rows
