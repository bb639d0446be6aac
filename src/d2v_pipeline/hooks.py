"""Run-level hooks: parameters validated before anything runs, the run's identity, progress.

- Parameters (:class:`ParameterHooks`): as soon as the context exists (before the catalog,
  any hook that writes, or any node), the merged parameters, ``--params`` included, are
  validated against :mod:`d2v_pipeline.schema`; every problem is reported in one
  :class:`~d2v_pipeline.schema.ParameterError`, one line per problem:
  ``conf/base/parameters_pretrain.yml: image.pretrain.data2vec.top_k: 5 > encoder depth 2``.

- ``run_info`` (catalog: ``<data_root>/09_tracking/run_info.json``) says what ran and from
  which checkout: ``env``, ``command``, ``started_at``, ``git_commit``, ``git_clean``,
  ``git_changes``, ``data_root``, ``kedro_version``. The report's header reads it.
  Cleanliness ignores the run outputs (the data root and dvc.lock, which a run or
  ``dvc repro`` rewrites on purpose), so every stage of a ``dvc repro`` is judged alike.
- Progress: nodes differ by orders of magnitude in cost (a pretraining node takes
  minutes, a split milliseconds), so a plain node count makes a poor ETA. Each node's
  wall time is recorded in the catalog's ``node_timings`` (merged across runs, written
  atomically after every node); the ETA of the next run uses the last recorded time of
  every node still to run, falling back to the mean time per node for nodes never timed.
  The report reads the same file for its provenance section.

Both files live under the environment's data root, so no run writes outside it.
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kedro import __version__ as kedro_version
from kedro.framework.hooks import hook_impl

from d2v_pipeline import experiment

log = logging.getLogger(__name__)

RUN_INFO = "run_info"
NODE_TIMINGS = "node_timings"
MAX_LISTED_CHANGES = 20


def _fmt(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed: ``kedro run --env smoke`` (also for ``python -m kedro``)."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    prog = Path(argv[0])
    kedro_cli = (
        prog.name == "kedro"
        or argv[0] == "python -m kedro"  # what kedro/__main__.py sets
        or (prog.name == "__main__.py" and prog.parent.name == "kedro")
    )
    return shlex.join(["kedro" if kedro_cli else prog.name, *argv[1:]])


def run_info(
    env: str | None, state: experiment.GitState, data_root: str, argv: list[str] | None = None
) -> dict[str, Any]:
    """The run's identity (the ``run_info`` contract; see the module docstring).

    ``git_commit`` and ``git_clean`` are null outside git; ``git_changes`` lists at most
    MAX_LISTED_CHANGES of the ``git_changes_total`` changed paths outside the run outputs.
    """
    return {
        "env": env,
        "command": command_line(argv),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": state.commit,
        "git_clean": state.clean if state.commit is not None else None,
        "git_changes": list(state.changes[:MAX_LISTED_CHANGES]),
        "git_changes_total": len(state.changes),
        "data_root": data_root,
        "kedro_version": kedro_version,
    }


def _dataset(catalog: Any, name: str) -> Any:
    try:
        return catalog.get(name)
    except Exception:  # a catalog without the entry (tests' own catalogs): nothing to record
        return None


class ParameterHooks:
    """Refuse to start a run whose parameters break the schema (nothing is read or written)."""

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        from d2v_pipeline.schema import Parameters, ParameterSources, check_parameters

        loader = context.config_loader
        sources = ParameterSources.from_config_loader(loader, Path(context.project_path))
        check_parameters(Parameters, loader["parameters"], sources)


class RunInfoHooks:
    """Write ``run_info`` at the start of every run; pin the git state for node metadata."""

    def __init__(self) -> None:
        self._data_root = experiment.DEFAULT_DATA_ROOT

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        try:
            root = context.config_loader["globals"].get("data_root")
        except Exception:  # no globals.yml: the catalog's paths then use no data_root either
            root = None
        self._data_root = str(root or experiment.DEFAULT_DATA_ROOT)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], catalog: Any) -> None:
        state = experiment.git_state(run_params["project_path"], self._data_root)
        experiment.set_run_git_state(state)  # pretraining metadata names the same commit
        info = run_info(run_params.get("env"), state, self._data_root)
        if info["git_clean"] is False:
            log.warning(
                "git tree has %d change(s) outside the run outputs (%s): results will be "
                "recorded as %s+dirty",
                info["git_changes_total"],
                ", ".join(info["git_changes"][:5]),
                info["git_commit"],
            )
        if (dataset := _dataset(catalog, RUN_INFO)) is not None:
            dataset.save(info)

    @hook_impl
    def after_pipeline_run(self) -> None:
        experiment.set_run_git_state(None)

    @hook_impl
    def on_pipeline_error(self) -> None:
        experiment.set_run_git_state(None)


class ProgressHooks:
    """Log ``[done/total] node in Xs | elapsed | ETA`` after every node."""

    def __init__(self) -> None:
        self._pending: dict[str, float] = {}
        self._starts: dict[str, float] = {}
        self._run_start = 0.0
        self._total = 0
        self._done = 0
        self._timings: dict[str, float] = {}
        self._store: Any = None

    def _load_timings(self) -> dict[str, float]:
        try:
            return {k: float(v) for k, v in (self._store.load() or {}).items()}
        except Exception:  # unreadable bookkeeping is no reason to fail a run: start afresh
            return {}

    @hook_impl
    def before_pipeline_run(self, pipeline: Any, catalog: Any) -> None:
        self._store = _dataset(catalog, NODE_TIMINGS)
        self._timings = self._load_timings() if self._store is not None else {}
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
        if self._store is not None:
            try:
                self._store.save(self._timings)
            except Exception as exc:  # timings are a convenience; never fail a run over them
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
        wrote = "report_html" in pipeline.all_outputs()
        report = _dataset(catalog, "report_html") if wrote else None
        if report is not None and (filepath := report._describe().get("filepath")):
            path = (Path(run_params["project_path"]) / filepath).resolve()
            log.info("Report: %s", path)
            print(f"\nReport written to {path}")
