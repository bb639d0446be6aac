"""Linear probe on sklearn digits: learns, sits at chance on shuffled labels, picks C on
validation only, rejects bad input."""

from __future__ import annotations

import numpy as np
import pytest

from d2v_pipeline.evaluation.probe import linear_probe

CS = (1e-3, 1e-2, 1e-1, 1.0)


def _flat(d, split):
    return d[f"{split}.x"].reshape(len(d[f"{split}.x"]), -1)


def _args(d):
    return (
        _flat(d, "train"),
        d["train.y"],
        _flat(d, "val"),
        d["val.y"],
        _flat(d, "test"),
        d["test.y"],
    )


def test_probe_separates_digits(digits):
    r = linear_probe(*_args(digits), Cs=CS)
    assert r.test_accuracy > 0.9
    assert r.val_accuracy > 0.9
    assert r.chosen_C in CS
    assert np.array(r.confusion).sum() == len(digits["test.y"])
    assert r.converged


def test_probe_returns_the_test_predictions_its_metrics_come_from(digits):
    r = linear_probe(*_args(digits), Cs=CS)
    pred, true = r.test_predictions, digits["test.y"]
    assert pred.shape == true.shape and pred.dtype == np.int64
    assert np.mean(pred == true) == r.test_accuracy
    cm = np.zeros((10, 10), dtype=np.int64)
    np.add.at(cm, (true, pred), 1)
    assert cm.tolist() == r.confusion
    assert "test_predictions" not in r.to_dict()  # JSON dicts stay small


def test_probe_on_shuffled_labels_is_at_chance(digits):
    rng = np.random.default_rng(1)
    xtr, ytr, xva, yva, xte, yte = _args(digits)
    r = linear_probe(xtr, rng.permutation(ytr), xva, yva, xte, yte, Cs=CS)
    # 10 balanced classes: chance is 0.1; 397 test rows give a std of ~0.015
    assert r.test_accuracy < 0.2


def test_C_is_chosen_on_val_not_test(digits):
    xtr, ytr, xva, yva, xte, yte = _args(digits)
    base = linear_probe(xtr, ytr, xva, yva, xte, yte, Cs=CS)
    shuffled = linear_probe(
        xtr, ytr, xva, yva, xte, np.random.default_rng(2).permutation(yte), Cs=CS
    )
    assert shuffled.chosen_C == base.chosen_C
    assert shuffled.val_accuracy_by_C == base.val_accuracy_by_C
    assert shuffled.test_accuracy < base.test_accuracy - 0.5
    # the choice is the best val accuracy, ties going to the smallest C
    best = max(base.val_accuracy_by_C.values())
    assert base.chosen_C == min(float(c) for c, a in base.val_accuracy_by_C.items() if a == best)


def test_probe_bad_input_raises(digits):
    xtr, ytr, xva, yva, xte, yte = _args(digits)
    with pytest.raises(ValueError, match="train_y has 999 labels"):
        linear_probe(xtr, ytr[:-1], xva, yva, xte, yte, Cs=CS)
    with pytest.raises(ValueError, match="test_x has 63 features"):
        linear_probe(xtr, ytr, xva, yva, xte[:, 1:], yte, Cs=CS)
    bad = xva.copy()
    bad[5, 3] = np.nan
    with pytest.raises(ValueError, match=r"val_x contains NaN.*row 5"):
        linear_probe(xtr, ytr, bad, yva, xte, yte, Cs=CS)
    with pytest.raises(ValueError, match="Cs is empty"):
        linear_probe(xtr, ytr, xva, yva, xte, yte, Cs=())
    with pytest.raises(ValueError, match="single class"):
        linear_probe(xtr, np.zeros_like(ytr), xva, yva, xte, yte, Cs=CS)
