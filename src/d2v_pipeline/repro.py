"""`make run`: the base experiment through `dvc repro`, so a second run is a no-op.

DVC runs each stage (a `kedro run` slice of the base environment) whose code, data or
parameters changed since `dvc.lock`, caches its outputs, and skips the rest. The stages'
output goes straight to the terminal, so Kedro's progress bars and log lines show as in a
plain `kedro run`. At the end this prints which stages ran (read from what changed in
`dvc.lock`), the total wall time and where the report is.

    python -m d2v_pipeline.repro                 # everything that changed
    python -m d2v_pipeline.repro pretrain@image  # one stage and what it needs (dvc repro args)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

QUIET_ENV = {
    "KEDRO_DISABLE_TELEMETRY": "1",
    "DVC_NO_ANALYTICS": "1",
    "ITERATIVE_DO_NOT_TRACK": "1",
    "MPLBACKEND": "Agg",
}


def _fmt(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m else f"{seconds:.1f} s"


def _lock_stages(root: Path) -> dict[str, Any]:
    """Stage name -> its dvc.lock entry ({} before the first run)."""
    path = root / "dvc.lock"
    if not path.exists():
        return {}
    return (yaml.safe_load(path.read_text()) or {}).get("stages", {}) or {}


def _stages(root: Path) -> tuple[list[str], str]:
    """Every stage of dvc.yaml (foreach stages expanded: `pretrain@image`) and the report
    file among the outs (`data/08_reporting/report.html` in the base experiment)."""
    doc = yaml.safe_load((root / "dvc.yaml").read_text()) or {}
    names, report = [], "the report"
    for name, stage in (doc.get("stages") or {}).items():
        items = stage.get("foreach") if isinstance(stage, dict) else None
        names += [f"{name}@{item}" for item in items] if items else [name]
        for out in (stage.get("do", stage) if isinstance(stage, dict) else {}).get("outs", []):
            out = next(iter(out)) if isinstance(out, dict) else str(out)
            report = out if out.endswith("report.html") else report
    return names, report


def run(args: list[str], root: Path | None = None) -> int:
    """Run `dvc repro *args` in ``root`` (default: the current folder) with the terminal
    attached; return its exit code."""
    root = Path.cwd() if root is None else root
    for needed in ("dvc.yaml", ".dvc"):
        if not (root / needed).exists():
            print(f"error: {root / needed} not found: run from the project root", file=sys.stderr)
            return 2
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, **QUIET_ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    before = _lock_stages(root)
    stages, report = _stages(root)
    print(f"d2v_pipeline: dvc repro of {len(stages)} stages (up-to-date stages are skipped)")
    start = time.monotonic()
    code = subprocess.call([str(bin_dir / "dvc"), "repro", *args], cwd=root, env=env)
    elapsed = time.monotonic() - start
    after = _lock_stages(root)
    ran = [s for s in stages if after.get(s) != before.get(s)]
    if code != 0:
        done = f"; finished before the failure: {', '.join(ran)}" if ran else ""
        print(
            f"d2v_pipeline: dvc repro failed (exit {code}) after {_fmt(elapsed)}{done}. "
            "Fix the error above and run `make run` again: finished stages are kept.",
            file=sys.stderr,
        )
        return code
    if ran:
        print(
            f"d2v_pipeline: ran {len(ran)} of {len(stages)} stages ({', '.join(ran)}) "
            f"in {_fmt(elapsed)}; report written to {report}"
        )
    else:
        print(
            f"d2v_pipeline: nothing changed, all {len(stages)} stages are up to date "
            f"({_fmt(elapsed)}); the report is {report}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
