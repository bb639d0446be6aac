"""Where a study's trials live and how several workers share them.

Study bookkeeping, robust to interruption and to several workers on one storage:

- a trial *counts* towards ``n_trials`` when complete, pruned, failed because of its config
  (NaN loss, non-finite features) or running in a live worker;
- a worker counts and creates its next trial under a lock (local journal / SQLite files), so
  two local workers never overshoot; over an RDB shared by machines the count is not locked
  and the total may exceed ``n_trials`` by at most the number of workers minus one;
- a trial left RUNNING by a killed worker (dead pid on this host, or no heartbeat for
  ``stale_after_s``) is marked failed ("stale") and re-run; an interrupted trial likewise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

JOURNAL_FILE = "study.journal"
# FAIL kinds that are a verdict on the trial's config: they count towards n_trials.
COUNTED_FAILURES = ("nan_loss", "non_finite_features")


def describe_storage(storage: str | None, study_dir: Path | None) -> str:
    """A printable storage location with any password removed."""
    if storage is None:
        return str(Path(study_dir or ".") / JOURNAL_FILE)
    if "://" in storage:
        from sqlalchemy.engine import make_url

        try:
            return make_url(storage).render_as_string(hide_password=True)
        except Exception:  # an unparsable URL: never print it, it may hold a password
            return storage.split("://", 1)[0] + "://***"
    return storage


def open_storage(storage: str | None, study_dir: Path | None) -> tuple[BaseStorage, Path | None]:
    """The Optuna storage and, for local files, the path our trial-count lock sits next to.

    ``None`` = a journal file ``study.journal`` in ``study_dir``; a string with ``://`` = an RDB
    URL (``sqlite:///...``, ``postgresql://...``); any other string = a journal file path.
    """
    if storage is not None and "://" in storage:
        kwargs: dict[str, Any] = {}
        lock_base = None
        if storage.startswith("sqlite:///"):
            # several local workers on one SQLite file wait for each other instead of failing
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
            lock_base = Path(storage.removeprefix("sqlite:///"))
            lock_base.parent.mkdir(parents=True, exist_ok=True)
        return RDBStorage(storage, **kwargs), lock_base
    path = Path(storage) if storage is not None else Path(study_dir or ".") / JOURNAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path))), path


@contextlib.contextmanager
def count_lock(lock_base: Path | None) -> Iterator[None]:
    """Serialise count-then-create between local workers (no-op for a remote RDB)."""
    if lock_base is None:
        yield
        return
    # our own lock file: the journal backend already uses "<journal>.lock"
    lock = JournalFileOpenLock(str(lock_base) + ".tune", grace_period=60)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def trial_counts(trial: FrozenTrial) -> bool:
    """Whether a trial counts towards n_trials (see module docstring)."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get("fail_kind") in COUNTED_FAILURES


def fail_stale_trials(study: optuna.Study, storage: BaseStorage, stale_after_s: float) -> list[int]:
    """Mark RUNNING trials whose worker is gone as FAIL ("stale"); returns their numbers."""
    host, now, failed = socket.gethostname(), time.time(), []
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = t.user_attrs.get("heartbeat")
        if beat is None and t.datetime_start is not None:
            beat = t.datetime_start.timestamp()
        pid = t.user_attrs.get("worker_pid")
        dead = t.user_attrs.get("worker_host") == host and pid != os.getpid() and pid is not None
        dead = dead and not _pid_alive(int(pid))
        if dead or (beat is not None and now - beat > stale_after_s):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            reason = "worker process gone" if dead else f"no heartbeat for {now - beat:.0f} s"
            storage.set_trial_user_attr(trial_id, "fail_kind", "stale")
            storage.set_trial_user_attr(trial_id, "fail_reason", f"stale: {reason}")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            failed.append(t.number)
            log.warning("trial %d marked failed (stale: %s); it will be re-run", t.number, reason)
    return failed
