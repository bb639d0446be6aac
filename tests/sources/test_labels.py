"""Class checks shared by the readers: exact-size stratified subsampling, single-example
classes, and labels that look like a typo of another."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from d2v_pipeline.sources.labels import (
    check_classes,
    edit_distance,
    stratified_counts,
    stratified_subsample,
    suspect_labels,
)


def test_max_examples_600_keeps_exactly_600_from_uneven_class_folders():
    # the folder sizes that gave 599 with per-class half-up rounding
    sizes = [354, 650, 612, 583, 601, 455, 540, 598, 512, 613]
    assert sum(sizes) == 5518
    counts = stratified_counts(sizes, 600)
    assert sum(counts) == 600
    shares = np.asarray(sizes) * 600 / sum(sizes)
    assert np.all(np.abs(np.asarray(counts) - shares) < 1)  # each within one of its share
    labels = np.repeat(np.arange(len(sizes)), sizes)
    keep = stratified_subsample(labels, 600, np.random.default_rng(0))
    assert len(keep) == 600 == len(np.unique(keep))
    assert np.bincount(labels[keep]).tolist() == counts


@pytest.mark.parametrize("total", [3, 7, 10, 11, 99, 100])
def test_stratified_counts_always_hit_the_total_and_keep_every_class(total):
    sizes = [1, 2, 3, 50, 44]
    if total < len(sizes):
        with pytest.raises(ValueError, match="at least one"):
            stratified_counts(sizes, total)
        return
    counts = stratified_counts(sizes, total)
    assert sum(counts) == min(total, sum(sizes))
    assert all(1 <= c <= s for c, s in zip(counts, sizes, strict=True))


def test_typo_like_labels_are_found_but_short_distinct_labels_are_not():
    assert edit_distance("positive", "postive") == 1
    found = suspect_labels(["positive", "postive", "Positive ", "negative"], [40, 2, 1, 40])
    assert [(s["label"], s["similar_to"]) for s in found] == [
        ("postive", "positive"),
        ("Positive ", "positive"),
    ]
    assert suspect_labels(["0", "1", "up", "on", "yes", "no"], [50, 1, 50, 1, 50, 1]) == []


def test_single_example_class_names_where_it_came_from(caplog):
    labels = np.array([0, 0, 0, 1, 2, 2])
    with pytest.raises(ValueError, match=r"folder/b: class 'b' has a single example.*Fix it"):
        check_classes(["a", "b", "c"], labels, lambda c: f"folder/{'abc'[c]}", "Fix it.")
    with caplog.at_level(logging.WARNING):
        found = check_classes(
            ["cat", "dog", "dogg"], np.array([0] * 9 + [1] * 9 + [2] * 2), str, "Fix it."
        )
    assert [s["label"] for s in found] == ["dogg"] and "'dogg'" in caplog.text
