"""How a trial's encoder is scored: a linear probe on the validation split only.

The probe is fitted on a labelled train subset; the validation split is halved (stratified,
fixed seed): one half chooses the regularisation C, the other gives the score. The test
split is never read. Non-finite features fail the trial as a verdict on its config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from d2v_pipeline.data2vec.runtime import Runtime
from d2v_pipeline.evaluation import extract_features, linear_probe

from .config import ProbeSettings


class TrialFailure(Exception):
    """A trial failed because of its configuration (NaN loss, non-finite features)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]  # x, y, attention_mask


@dataclass
class ProbeData:
    """Labelled train subset (fit), val half A (chooses C), val half B (the score)."""

    train: Split
    select: Split
    score: Split


def split_val_halves(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified halves of the val rows: (C-selection rows, scoring rows).

    Rows are shuffled within each class (``seed``), laid out class after class and dealt
    alternately, so each class splits evenly (+-1) and even a val split with one row per
    class yields two non-empty halves.
    """
    rng = np.random.default_rng([seed, 7919])
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)])
    return np.sort(order[0::2]), np.sort(order[1::2])


def make_probe_data(
    model_input: Mapping[str, torch.Tensor], train_idx: np.ndarray, split_seed: int
) -> ProbeData:
    """Gather the probe's rows from ingest's tensors (the test split is never read)."""

    def take(split: str, idx: np.ndarray) -> Split:
        t = torch.as_tensor(idx, dtype=torch.long)
        am = model_input.get(f"{split}.attention_mask")
        return (
            model_input[f"{split}.x"][t],
            model_input[f"{split}.y"][t],
            (None if am is None else am[t]),
        )

    n_train = len(model_input["train.y"])
    if len(train_idx) == 0 or train_idx.min() < 0 or train_idx.max() >= n_train:
        raise ValueError(f"label subset indices must be in [0, {n_train}); got {len(train_idx)}")
    val_y = model_input["val.y"].numpy()
    half_a, half_b = split_val_halves(val_y, split_seed)
    if len(half_a) == 0 or len(half_b) == 0:
        raise ValueError(f"val split has {len(val_y)} rows: too few to halve for the probe")
    data = ProbeData(take("train", train_idx), take("val", half_a), take("val", half_b))
    if len(torch.unique(data.train[1])) < 2:
        raise ValueError("the labelled train subset holds a single class; raise label_fraction")
    return data


def probe_score(
    encoder: torch.nn.Module, data: ProbeData, s: ProbeSettings, runtime: Runtime | None = None
) -> dict[str, Any]:
    """Val-half accuracy of a linear probe on the frozen encoder (C chosen on the other half);
    features on ``runtime``'s device and precision (None: where the encoder is, fp32).

    Raises TrialFailure("non_finite_features") when the encoder outputs NaN/inf.
    """
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            feats = [
                extract_features(
                    encoder,
                    x,
                    am,
                    layers=s.layers,
                    top_k=s.top_k,
                    pool=s.pool,
                    batch_size=s.batch_size,
                    runtime=runtime,
                )
                for x, _, am in (data.train, data.select, data.score)
            ]
    finally:
        encoder.train(was_training)
    for name, f in zip(("train", "val_select", "val_score"), feats, strict=True):
        if not np.all(np.isfinite(f)):
            raise TrialFailure("non_finite_features", f"non-finite encoder features ({name})")
    # linear_probe picks C on its "val" argument and scores its "test" argument: here the
    # two val halves, so the score never sees the data C was chosen on, and test stays unread
    res = linear_probe(
        feats[0], data.train[1].numpy(), feats[1], data.select[1].numpy(), feats[2],
        data.score[1].numpy(), Cs=s.Cs, max_iter=s.max_iter, seed=0,
    )  # fmt: skip
    return {"accuracy": res.test_accuracy, "select_accuracy": res.val_accuracy, "C": res.chosen_C}
