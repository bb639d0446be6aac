"""Checks on the classes a reader found, and exact-size stratified subsampling.

- A class with a single example cannot be split (every class needs an example in train,
  val and test): the readers refuse it, naming where it came from.
- A class whose name is one or two edits away from another, much larger class is most
  likely a typo ("postive" next to "positive"); it is kept (the data says it is a class) but
  reported: a warning in the log and an entry in the reader's ``suspect_labels``, which the
  ingest summary shows.
- :func:`stratified_counts` splits a total over classes in proportion to their sizes and
  sums to exactly that total (largest remainders), so ``max_examples: 600`` keeps 600.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# A label is a suspected typo of another when it is this close to it ...
MAX_TYPO_EDITS = 2
# ... and has at most this many examples, or at most this share of the other label's count.
SUSPECT_MAX_COUNT = 2
SUSPECT_MAX_SHARE = 0.05


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions each cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _looks_alike(a: str, b: str) -> int | None:
    """The edit distance between two label names when one looks like a typo of the other.

    Case and surrounding space are ignored ("Positive" vs "positive" is distance 0); beyond
    that at most :data:`MAX_TYPO_EDITS` edits, and at most a third of the longer name, so
    short distinct labels ("0"/"1", "up"/"on", "yes"/"no") never count as alike.
    """
    fa, fb = a.strip().casefold(), b.strip().casefold()
    d = edit_distance(fa, fb)
    return d if d <= min(MAX_TYPO_EDITS, max(len(fa), len(fb)) // 3) else None


def suspect_labels(class_names: Sequence[str], counts: Sequence[int]) -> list[dict[str, Any]]:
    """Classes that look like a typo of a much larger class, largest partner first.

    Each entry: ``{"label", "count", "similar_to", "similar_count", "edit_distance"}``.
    A label is suspect when it looks alike (:func:`_looks_alike`) a class with at least three
    times its examples and it has at most :data:`SUSPECT_MAX_COUNT` examples or at most
    :data:`SUSPECT_MAX_SHARE` of the other's.
    """
    out = []
    for name, count in zip(class_names, counts, strict=True):
        partners = []
        for other, other_count in zip(class_names, counts, strict=True):
            if other == name or other_count < 3 * count:
                continue
            if count > max(SUSPECT_MAX_COUNT, SUSPECT_MAX_SHARE * other_count):
                continue
            distance = _looks_alike(name, other)
            if distance is not None:
                partners.append((other_count, other, distance))
        if partners:
            other_count, other, distance = max(partners)
            out.append(
                {
                    "label": name,
                    "count": int(count),
                    "similar_to": other,
                    "similar_count": int(other_count),
                    "edit_distance": distance,
                }
            )
    return out


def check_classes(
    class_names: Sequence[str],
    labels: np.ndarray,
    where: Callable[[int], str],
    remedy: str,
) -> list[dict[str, Any]]:
    """Refuse single-example classes; warn about (and return) typo-like labels.

    Args:
        class_names: name of each class id.
        labels: class id of every example.
        where: class id -> where that class came from (a folder, "label 'x' on line 12").
        remedy: what to do about a single-example class (reader specific).

    Returns:
        :func:`suspect_labels` of the classes (each also logged as a warning).
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
    suspects = suspect_labels(list(class_names), counts.tolist())
    by_label = {s["label"]: s for s in suspects}
    for c, name in enumerate(class_names):
        if counts[c] == 1:
            hint = ""
            if name in by_label:
                s = by_label[name]
                hint = f" It looks like a typo of {s['similar_to']!r}"
                hint += f" ({s['similar_count']} examples)."
            raise ValueError(
                f"{where(c)}: class {name!r} has a single example; every class needs at least "
                f"one example in each of train, val and test.{hint} {remedy}"
            )
    for s in suspects:
        log.warning(
            "label %r (%d examples) looks like a typo of %r (%d examples, %d edit(s) apart): "
            "it is kept as a class of its own; fix it if it is a typo (%s)",
            s["label"],
            s["count"],
            s["similar_to"],
            s["similar_count"],
            s["edit_distance"],
            where(list(class_names).index(s["label"])),
        )
    return suspects


def stratified_counts(class_sizes: Sequence[int], total: int) -> list[int]:
    """Examples to keep per class: proportional to ``class_sizes``, at least one per class,
    never more than a class holds, and summing to exactly ``total``.

    Each class gets the floor of its proportional share; the examples left over go one each
    to the classes with the largest remainders (ties to the lower class id). Rounding every
    share on its own instead (half up) misses the total by up to half the number of classes:
    ten class folders of 354 to 650 images (5,518 in all) gave 599 for a total of 600.
    """
    sizes = np.asarray(class_sizes, dtype=np.int64)
    n = int(sizes.sum())
    if total >= n:
        return sizes.tolist()
    if total < len(sizes):
        raise ValueError(
            f"cannot keep {total} examples with at least one of each of {len(sizes)} classes"
        )
    quota = sizes * total / n
    counts = np.maximum(np.floor(quota).astype(np.int64), 1)
    remainder = quota - np.floor(quota)
    order = sorted(range(len(sizes)), key=lambda c: (-remainder[c], c))
    while counts.sum() < total:  # hand out what flooring left over, largest remainder first
        for c in order:
            if counts.sum() == total:
                break
            if counts[c] < sizes[c]:
                counts[c] += 1
    while counts.sum() > total:  # the at-least-one rule took too many: smallest remainder first
        for c in reversed(order):
            if counts.sum() == total:
                break
            if counts[c] > 1:
                counts[c] -= 1
    return counts.tolist()


def stratified_subsample(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of exactly ``size`` rows (or all rows) keeping class proportions.

    Each class (in increasing id order) is permuted with ``rng`` and its first
    :func:`stratified_counts` rows kept: the same draws as before the exact-size fix, so a
    subsample whose per-class sizes did not change is the same subsample.
    """
    labels = np.asarray(labels)
    if size >= len(labels):
        return np.arange(len(labels))
    classes = np.unique(labels)
    members = [np.nonzero(labels == c)[0] for c in classes]
    counts = stratified_counts([len(m) for m in members], size)
    picks = [rng.permutation(m)[:k] for m, k in zip(members, counts, strict=True)]
    return np.sort(np.concatenate(picks))
