"""Metrics: accuracy / macro-F1 / confusion agree with sklearn; tidy rows; bad input."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from d2v_pipeline.evaluation.metrics import TIDY_COLUMNS, classification_metrics, tidy_rows


def test_metrics_match_sklearn_on_random_labels():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, 300)
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 5, 300))
    m = classification_metrics(y_true, y_pred, num_classes=5)
    assert m["accuracy"] == pytest.approx(np.mean(y_true == y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    cm = np.array(m["confusion"])
    assert cm.shape == (5, 5) and cm.sum() == 300
    assert cm[2, 3] == np.sum((y_true == 2) & (y_pred == 3))
    assert m["n"] == 300


def test_macro_f1_skips_classes_absent_from_labels_and_predictions():
    # class 3 never occurs: same as sklearn's default label set, no zero-F1 penalty
    y_true = np.array([0, 0, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 2, 0])
    m = classification_metrics(y_true, y_pred, num_classes=4)
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert np.array(m["confusion"])[3].sum() == 0


def test_bad_labels_raise_naming_the_problem():
    with pytest.raises(ValueError, match=r"y_pred\[1\] = 7"):
        classification_metrics([0, 1], [0, 7], num_classes=3)
    with pytest.raises(ValueError, match="2 labels but y_pred has 3"):
        classification_metrics([0, 1], [0, 1, 1], num_classes=3)
    with pytest.raises(ValueError, match="integer class ids"):
        classification_metrics([0.5, 1.0], [0, 1], num_classes=3)


def test_tidy_rows_are_long_format_scalars_only():
    m = classification_metrics([0, 1, 1, 0], [0, 1, 0, 0], num_classes=2)
    rows = tidy_rows(m, modality="image", method="data2vec", fraction=0.1, seed=2, protocol="probe")
    assert {r["metric"] for r in rows} == {"accuracy", "macro_f1", "n"}  # confusion skipped
    assert all(tuple(r) == TIDY_COLUMNS for r in rows)
    acc = next(r for r in rows if r["metric"] == "accuracy")
    assert acc["value"] == 0.75 and acc["fraction"] == 0.1 and acc["seed"] == 2
    with pytest.raises(KeyError, match="no key"):
        tidy_rows(
            m, modality="image", method="x", fraction=1.0, seed=0, protocol="p", include=["auc"]
        )
