"""Shared by the bad-input suite: every case proves that nothing written before changed.

A case takes a :func:`snapshot` of the directories that hold artefacts before it feeds the
bad input, runs the real entry point (expecting an error), and then calls
:func:`assert_unchanged`: every file present before is still there with the same bytes, and no
half-written file was left behind (new files are allowed only where the case says so, e.g. a
damaged checkpoint moved aside).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def snapshot(*roots: Path) -> dict[Path, str]:
    """sha256 of every file under ``roots`` (a missing root contributes nothing)."""
    digest: dict[Path, str] = {}
    for root in roots:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            digest[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def assert_unchanged(before: dict[Path, str], *roots: Path, allow_new: Iterable[str] = ()) -> None:
    """Every file in ``before`` has its old bytes; a new file under ``roots`` must match one of
    the glob patterns in ``allow_new`` (matched against the file name)."""
    after = snapshot(*roots)
    changed = sorted(str(p) for p, h in before.items() if after.get(p) != h)
    assert not changed, f"artefacts changed or removed by a failed run: {changed}"
    patterns = tuple(allow_new)
    new = sorted(
        str(p) for p in after if p not in before and not any(p.match(pat) for pat in patterns)
    )
    assert not new, f"files left behind by a failed run: {new}"
