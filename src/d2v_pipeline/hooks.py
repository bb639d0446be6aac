"""Run-level progress: node counter, elapsed time and an ETA for the whole run.

Nodes differ by orders of magnitude in cost (a pretraining node takes minutes,
a split takes milliseconds), so a plain node count makes a poor ETA. Each
node's wall time is recorded in ``data/09_tracking/node_timings.json`` (merged
across runs, written atomically after every node); the ETA of the next run uses
the last recorded time of every node still to run, falling back to the mean
time per node for nodes never timed. The report reads the same file for its
provenance section.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from d2v_pipeline.io import atomic_write

log = logging.getLogger(__name__)

TIMINGS_PATH = Path("data/09_tracking/node_timings.json")


def _fmt(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def load_node_timings(path: Path = TIMINGS_PATH) -> dict[str, float]:
    """Last recorded wall time (s) per node name; empty when never recorded."""
    try:
        return {k: float(v) for k, v in json.loads(path.read_text()).items()}
    except (FileNotFoundError, json.JSONDecodeError, AttributeError, ValueError):
        return {}


class ProgressHooks:
    """Log ``[done/total] node in Xs | elapsed | ETA`` after every node."""

    def __init__(self) -> None:
        self._pending: dict[str, float] = {}
        self._starts: dict[str, float] = {}
        self._run_start = 0.0
        self._total = 0
        self._done = 0
        self._timings: dict[str, float] = {}
        self._path = TIMINGS_PATH

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._path = Path(context.project_path) / TIMINGS_PATH

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self._timings = load_node_timings(self._path)
        names = [n.name for n in pipeline.nodes]
        known = [self._timings[n] for n in names if n in self._timings]
        default = sum(known) / len(known) if known else 1.0
        self._pending = {n: self._timings.get(n, default) for n in names}
        self._total = len(names)
        self._done = 0
        self._run_start = time.perf_counter()
        eta = sum(self._pending.values())
        source = "from recorded node times" if known else "no node times recorded yet"
        log.info("Running %d nodes; estimated %s (%s)", self._total, _fmt(eta), source)

    @hook_impl
    def before_node_run(self, node: Any) -> None:
        self._starts[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Any) -> None:
        took = time.perf_counter() - self._starts.pop(node.name, time.perf_counter())
        self._done += 1
        self._pending.pop(node.name, None)
        self._timings[node.name] = round(took, 3)
        try:
            atomic_write(self._path, json.dumps(self._timings, indent=1, sort_keys=True))
        except OSError as exc:  # timings are a convenience; never fail a run over them
            log.debug("could not record node timings: %s", exc)
        elapsed = time.perf_counter() - self._run_start
        log.info(
            "[%d/%d] %s took %s | elapsed %s | ETA %s",
            self._done,
            self._total,
            node.name,
            _fmt(took),
            _fmt(elapsed),
            _fmt(sum(self._pending.values())),
        )

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        elapsed = time.perf_counter() - self._run_start
        log.info("Run finished in %s", _fmt(elapsed))
        if "report_html" in pipeline.all_outputs():
            dataset = catalog.get("report_html") if hasattr(catalog, "get") else None
            described = dataset._describe() if dataset is not None else {}
            filepath = described.get("filepath", "data/08_reporting/report.html")
            path = (self._path.parents[2] / filepath).resolve()
            log.info("Report: %s", path)
            print(f"\nReport written to {path}")
