"""Seeded, deterministic splitting: subsample, train/val/test, nested label subsets.

- train/val/test are stratified by class; every split gets at least one example of every
  class (a class too small for that is an error naming it, its count and the remedy). Speech
  splits by whole speakers (a group split): train, val and test speakers are pairwise
  disjoint, so validation, like test, measures unseen voices.
- each split's rows are in a seeded random order (MNIST 5k ships sorted by label).
- label subsets are nested prefixes of one seeded per-class permutation of the train rows:
  a fraction f keeps max(1, round(f * n_c)) rows of class c, so each subset holds at least
  one example per class and every smaller subset lies inside every larger one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from d2v_pipeline.pipelines.ingest.params import SplitConfig
from d2v_pipeline.sources import labels as labels_lib

# distinct random streams derived from the one user seed (numpy SeedSequence entropy lists)
_SUBSAMPLE_STREAM, _SPLIT_STREAM, _ORDER_STREAM, _SUBSET_STREAM = 1, 2, 3, 4


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def _share(fraction: float, count: int) -> int:
    """round(fraction * count) half up, at least 1 (every class in every split)."""
    return max(1, math.floor(fraction * count + 0.5))


def stratified_subsample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of exactly ``size`` rows (or all) keeping class proportions, >= 1 per
    class (sources.labels.stratified_counts: largest remainders, so the counts add up)."""
    return labels_lib.stratified_subsample(labels, size, _rng(seed, _SUBSAMPLE_STREAM))


def _class_name(class_names: list[str], c: int) -> str:
    return f"{class_names[c]!r} (id {c})"


def _too_small(class_names: list[str], c: int, count: int, fractions: dict[str, float]) -> str:
    """Why class ``c`` cannot be split, and what to do about it."""
    takes = " and ".join(
        f"{_share(f, count)} for {name} ({f:.0%})" for name, f in fractions.items()
    )
    need = len(fractions) + 1  # every split takes at least one example of every class
    if count < need:
        remedy = (
            f"every split needs at least one example of every class, so a class needs at "
            f"least {need}: add {need - count} more example(s) of it, or remove the class "
            f"from the source"
        )
    else:
        remedy = "lower val_fraction / test_fraction in parameters_ingest.yml"
    plural = "example" if count == 1 else "examples"
    return (
        f"class {_class_name(class_names, c)} has only {count} {plural}: {takes} "
        f"leave none for train; {remedy}"
    )


def _stratified(
    indices: np.ndarray, labels: np.ndarray, fractions: dict[str, float], rng: np.random.Generator,
    class_names: list[str],
) -> dict[str, np.ndarray]:  # fmt: skip
    """Split ``indices`` per class into the named fractions plus "rest"."""
    out: dict[str, list[np.ndarray]] = {name: [] for name in (*fractions, "rest")}
    for c in range(len(class_names)):
        members = rng.permutation(indices[labels[indices] == c])
        start = 0
        for name, fraction in fractions.items():
            take = _share(fraction, len(members))
            out[name].append(members[start : start + take])
            start += take
        if start >= len(members):
            raise ValueError(_too_small(class_names, c, len(members), fractions))
        out["rest"].append(members[start:])
    return {name: np.concatenate(parts) for name, parts in out.items()}


def _take_groups(
    order: list[Any], groups: np.ndarray, labels: np.ndarray, target: float, spare: int
) -> list[Any]:
    """Whole groups from the front of ``order`` until they hold at least ``target`` rows;
    then, for each class they lack, the next group in ``order`` that has it, provided
    ``spare`` more such groups stay behind for the splits still to be drawn (stratification
    by label as far as whole groups allow)."""
    sizes = dict(zip(*np.unique(groups, return_counts=True), strict=True))
    taken: list[Any] = []
    rows = 0
    for g in order:
        if rows >= target:
            break
        taken.append(g)
        rows += int(sizes[g])
    for c in np.unique(labels):
        with_c = set(np.unique(groups[labels == c]).tolist())
        if with_c & set(taken):
            continue
        having = [g for g in order if g in with_c]  # none of them taken yet
        if len(having) > spare:
            taken.append(having[0])
    return taken


def split_indices(
    labels: np.ndarray,
    class_names: list[str],
    split: SplitConfig,
    groups: np.ndarray | None = None,
    group_names: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Seeded train/val/test row indices (each split in a seeded random order).

    Without ``groups`` all three splits are stratified by class. With ``groups`` (speakers)
    every split takes whole groups: in one seeded order, test takes groups until it holds at
    least ``test_fraction`` of the rows, val the next ones until ``val_fraction``, train the
    rest; a split that lacks a class takes the next group that has it (:func:`_take_groups`).
    The three group sets are disjoint. Raises ValueError naming the class when a split would
    have none of it.
    """
    labels = np.asarray(labels)
    present = set(np.unique(labels).tolist())
    missing = [c for c in range(len(class_names)) if c not in present]
    if missing:
        raise ValueError(f"class {_class_name(class_names, missing[0])} has no examples at all")
    rng = _rng(split.seed, _SPLIT_STREAM)
    everything = np.arange(len(labels))
    if groups is None:
        parts = _stratified(
            everything,
            labels,
            {"test": split.test_fraction, "val": split.val_fraction},
            rng,
            class_names,
        )
        out = {"train": parts["rest"], "val": parts["val"], "test": parts["test"]}
    else:
        groups = np.asarray(groups)
        order = list(rng.permutation(np.unique(groups)))
        n = len(labels)
        test_groups = _take_groups(order, groups, labels, split.test_fraction * n, spare=2)
        rest = [g for g in order if g not in test_groups]
        val_groups = _take_groups(rest, groups, labels, split.val_fraction * n, spare=1)
        by_split = {
            "train": [g for g in rest if g not in val_groups],
            "val": val_groups,
            "test": test_groups,
        }
        if not by_split["train"]:
            raise ValueError(
                f"only {len(order)} speakers: holding out {split.test_fraction:.0%} of the clips "
                f"for test and {split.val_fraction:.0%} for val leaves no speaker for train"
            )
        out = {name: everything[np.isin(groups, gs)] for name, gs in by_split.items()}
        for c in range(len(class_names)):
            for name in ("test", "val", "train"):
                if not np.any(labels[out[name]] == c):
                    names = [group_names[g] if group_names else str(g) for g in by_split[name]]
                    listed = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
                    raise ValueError(
                        f"the speaker split leaves class {_class_name(class_names, c)} with no "
                        f"examples in {name} ({name} speakers: {listed})"
                    )
    order_rng = _rng(split.seed, _ORDER_STREAM)
    return {name: order_rng.permutation(np.sort(rows)) for name, rows in out.items()}


def fraction_key(fraction: float) -> str:
    """The label_subsets key of a fraction: "0.01", "0.1", "1.0"."""
    return repr(float(fraction))


def nested_label_subsets(
    train_labels: np.ndarray, fractions: tuple[float, ...], seed: int, draw: int = 0
) -> dict[str, list[int]]:
    """Nested, stratified subsets of the train rows (positions in train.x), sorted.

    Each class's train rows are permuted once (seeded by ``seed`` and ``draw``); fraction f
    keeps the first max(1, round(f * n_c)) of them, so smaller subsets are prefixes of
    larger ones. Different draws give independent subsets (the spread over seeds).
    """
    rng = (
        _rng(seed, _SUBSET_STREAM)
        if draw == 0
        else np.random.default_rng([seed, _SUBSET_STREAM, draw])
    )
    train_labels = np.asarray(train_labels)
    permuted = [rng.permutation(np.nonzero(train_labels == c)[0]) for c in np.unique(train_labels)]
    out = {}
    for fraction in sorted(fractions):
        keep = [rows[: min(len(rows), _share(fraction, len(rows)))] for rows in permuted]
        out[fraction_key(fraction)] = sorted(int(i) for i in np.concatenate(keep))
    return out
