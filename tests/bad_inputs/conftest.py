"""Fixtures of the bad-input suite (the snapshot helpers are in artefact_check.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def artefacts(tmp_path: Path) -> Path:
    """A directory with a few earlier artefacts in it (a CSV, a JSON, a binary file), for cases
    whose entry point writes next to existing outputs."""
    root = tmp_path / "artefacts"
    root.mkdir()
    (root / "metrics.csv").write_text("method,accuracy\nscratch,0.5\n")
    (root / "summary.json").write_text('{"rows": 3}\n')
    (root / "weights.bin").write_bytes(bytes(range(256)))
    return root
