"""The probe module: stratified validation halves and the probe's rows (never the test split)."""

from __future__ import annotations

import numpy as np
import torch

from d2v_pipeline.pipelines.finetune.nodes import subset_indices
from d2v_pipeline.pipelines.tune.probe import make_probe_data, split_val_halves


def test_val_halves_are_disjoint_stratified_and_deterministic():
    y = np.repeat(np.arange(5), 7)
    a, b = split_val_halves(y, seed=0)
    assert set(a).isdisjoint(b) and len(a) + len(b) == len(y)
    assert set(y[a]) == set(y[b]) == set(range(5))
    a2, b2 = split_val_halves(y, seed=0)
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    assert not np.array_equal(a, split_val_halves(y, seed=1)[0])
    # one row per class (the smoke speech set): still two non-empty halves
    a, b = split_val_halves(np.arange(8), seed=0)
    assert len(a) == len(b) == 4 and set(a).isdisjoint(b)


def test_probe_data_never_reads_test_and_accepts_per_seed_subsets(image_data):
    mi = dict(image_data["model_input"])
    mi.pop("test.x"), mi.pop("test.y")  # the probe must not need the test split
    # ingest writes {fraction: {seed: rows}}; the older flat {fraction: rows} also works
    per_seed = image_data["label_subsets"]
    assert isinstance(per_seed["0.1"], dict)
    flat = {k: v["0"] for k, v in per_seed.items()}
    idx_flat = subset_indices(flat, 0.1, 0)
    idx_seed = subset_indices(per_seed, 0.1, 0)
    assert np.array_equal(idx_flat, idx_seed)
    data = make_probe_data(mi, idx_seed, split_seed=0)
    assert torch.equal(data.train[1], mi["train.y"][torch.as_tensor(idx_seed)])
    n_val = len(mi["val.y"])
    assert len(data.select[1]) + len(data.score[1]) == n_val
