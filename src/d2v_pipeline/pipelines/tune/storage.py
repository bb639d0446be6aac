"""Where a study's trials live and how several workers share them.

Study bookkeeping, robust to interruption and to several workers on one storage:

- a trial *counts* towards ``n_trials`` when complete, pruned, failed because of its config
  (NaN loss, non-finite features) or running in a live worker;
- a worker counts and creates its next trial under a lock (:func:`count_lock`), so workers
  never overshoot ``n_trials``: a lock file next to a local journal / SQLite file, and on
  PostgreSQL a transaction-level advisory lock keyed by the study name, which the server
  drops when the holder's connection dies (a killed worker never leaves it held). Other
  databases (MySQL) are not locked: there the total may exceed ``n_trials`` by at most the
  number of workers minus one;
- a trial left RUNNING by a killed worker (dead pid on this host, or no heartbeat for
  ``stale_after_s``) is marked failed ("stale") and a replacement with the same parameters
  is enqueued (:func:`fail_stale_trials`); a trial interrupted by Ctrl-C likewise
  (:func:`requeue_interrupted_trials`). The replacement carries ``replaces_trial`` and the
  stale trial ``replaced_by``; both happen under the count lock, so a lost trial is
  replaced exactly once however many workers notice it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import socket
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
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
# FAIL kinds whose config was never judged: re-run with the same parameters. An "error" (an
# exception from our code) is not: the same config may well raise again; fix and re-run.
REQUEUED_FAILURES = ("stale", "interrupted")

# PostgreSQL advisory lock limits, in seconds. A worker waits at most LOCK_WAIT_S for the
# lock (then fails with a clear error instead of hanging); the server ends a holder's
# session after LOCK_IDLE_S idle inside its transaction (a frozen or unplugged machine
# cannot keep every other worker waiting). The locked section itself takes well under a
# second: count, enqueue, ask.
LOCK_WAIT_S = 600
LOCK_IDLE_S = 300


@dataclass(frozen=True)
class CountLock:
    """What serialises count-then-create on one storage (both None: nothing to lock)."""

    path: Path | None = None  # journal / SQLite file: a lock file next to it
    url: str | None = None  # PostgreSQL: advisory lock taken through this SQLAlchemy URL


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


def _backend(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).get_backend_name()


def open_storage(storage: str | None, study_dir: Path | None) -> tuple[BaseStorage, CountLock]:
    """The Optuna storage and the lock its workers count trials under.

    ``None`` = a journal file ``study.journal`` in ``study_dir``; a string with ``://`` = an RDB
    URL (``sqlite:///...``, ``postgresql+psycopg://...``); any other string = a journal file
    path.
    """
    if storage is not None and "://" in storage:
        kwargs: dict[str, Any] = {}
        lock = CountLock()
        backend = _backend(storage)
        if storage.startswith("sqlite:///"):  # a file (sqlite:// alone is in memory)
            # several local workers on one SQLite file wait for each other instead of failing
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
            lock = CountLock(path=Path(storage.removeprefix("sqlite:///")))
            lock.path.parent.mkdir(parents=True, exist_ok=True)
        elif backend == "postgresql":
            # a connection dropped while a worker trains (server restart, firewall) is
            # replaced instead of failing the trial's next write
            kwargs["engine_kwargs"] = {"pool_pre_ping": True}
            lock = CountLock(url=storage)
        try:
            # Optuna creates its tables on first use; two workers doing that at once on a new
            # PostgreSQL database collide, so they take turns (a no-op elsewhere)
            with _advisory_lock(lock.url, "schema"):
                return RDBStorage(storage, **kwargs), lock
        except ModuleNotFoundError as err:
            raise ModuleNotFoundError(
                f"tune.storage {describe_storage(storage, None)}: database driver missing "
                f"({err}); for PostgreSQL install psycopg (`pip install 'psycopg[binary]'`) "
                "and write the URL as postgresql+psycopg://user:password@host:5432/db"
            ) from err
    path = Path(storage) if storage is not None else Path(study_dir or ".") / JOURNAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path))), CountLock(path=path)


@functools.cache
def _lock_engine(url: str) -> Any:
    """One SQLAlchemy engine per URL for the advisory lock, without a pool: each locked
    section opens its own connection, so a lock never outlives its section in a pool."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    return sqlalchemy.create_engine(url, poolclass=NullPool)


def _lock_key(name: str) -> int:
    """The signed 64-bit advisory lock key for ``name`` (PostgreSQL's bigint)."""
    digest = hashlib.sha256(f"d2v_pipeline.tune:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def _advisory_lock(url: str | None, name: str) -> Iterator[None]:
    """Hold PostgreSQL's transaction-level advisory lock ``name`` (``url`` None: no-op).

    The lock ends with the transaction: at the end of the block, on an error in it, or when
    the connection dies with its worker.
    """
    if url is None:
        yield
        return
    import sqlalchemy
    from sqlalchemy.exc import OperationalError

    engine = _lock_engine(url)
    with engine.connect() as conn, conn.begin():
        conn.execute(sqlalchemy.text(f"SET LOCAL lock_timeout = '{LOCK_WAIT_S}s'"))
        conn.execute(
            sqlalchemy.text(f"SET LOCAL idle_in_transaction_session_timeout = '{LOCK_IDLE_S}s'")
        )
        try:
            conn.execute(
                sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"),
                {"key": _lock_key(name)},
            )
        except OperationalError as err:
            raise TimeoutError(
                f"{describe_storage(url, None)}: another worker held the lock {name!r} for "
                f"more than {LOCK_WAIT_S} s ({err.orig})"
            ) from err
        yield


@contextlib.contextmanager
def count_lock(lock: CountLock, study_name: str) -> Iterator[None]:
    """Serialise count-then-create between the workers of one study (see module docstring)."""
    if lock.url is not None:
        with _advisory_lock(lock.url, f"study:{study_name}"):
            yield
        return
    if lock.path is None:
        yield
        return
    # our own lock file: the journal backend already uses "<journal>.lock"
    file_lock = JournalFileOpenLock(str(lock.path) + ".tune", grace_period=60)
    file_lock.acquire()
    try:
        yield
    finally:
        file_lock.release()


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


def trial_params(trial: FrozenTrial) -> dict[str, Any]:
    """The parameter values a trial was given: those it suggested, completed by the fixed
    values it was enqueued with (a trial killed before suggesting has only the latter)."""
    return {**trial.system_attrs.get("fixed_params", {}), **trial.params}


def _enqueue_replacement(study: optuna.Study, lost: FrozenTrial) -> int:
    """Enqueue ``lost``'s parameters as a new trial; returns the new trial's number.

    Called under the count lock, so the newest WAITING trial naming ``lost`` is ours. The
    replacement keeps an ``enqueued`` tag (the default config stays enqueued once).
    """
    attrs: dict[str, Any] = {"replaces_trial": lost.number}
    if "enqueued" in lost.user_attrs:
        attrs["enqueued"] = lost.user_attrs["enqueued"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an out-of-range enqueued value is allowed
        study.enqueue_trial(trial_params(lost), user_attrs=attrs)
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return max(t.number for t in waiting if t.user_attrs.get("replaces_trial") == lost.number)


def replacements(trials: list[FrozenTrial]) -> dict[int, int]:
    """{lost trial number: number of the trial that re-runs its parameters}."""
    return {
        int(t.user_attrs["replaces_trial"]): t.number
        for t in trials
        if t.user_attrs.get("replaces_trial") is not None
    }


def fail_stale_trials(study: optuna.Study, storage: BaseStorage, stale_after_s: float) -> list[int]:
    """Mark RUNNING trials whose worker is gone as FAIL ("stale") and enqueue each one's
    parameters again; returns the stale trials' numbers. Call it under :func:`count_lock`."""
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
            new = _enqueue_replacement(study, t)
            # attributes first: a finished trial cannot be written to
            storage.set_trial_user_attr(trial_id, "replaced_by", new)
            storage.set_trial_user_attr(trial_id, "fail_kind", "stale")
            storage.set_trial_user_attr(trial_id, "fail_reason", f"stale: {reason}")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            failed.append(t.number)
            log.warning(
                "trial %d marked failed (stale: %s); re-run as trial %d with the same parameters",
                t.number,
                reason,
                new,
            )
    return failed


def requeue_interrupted_trials(study: optuna.Study) -> list[int]:
    """Enqueue again the parameters of trials failed as "interrupted" (Ctrl-C) that have no
    replacement yet; returns their numbers. Call it under :func:`count_lock`.

    (Stale trials are replaced as they are found, by :func:`fail_stale_trials`.)
    """
    trials = study.get_trials(deepcopy=False)
    replaced = replacements(trials)
    done = []
    for t in trials:
        kind = t.user_attrs.get("fail_kind")
        if t.state != TrialState.FAIL or kind not in REQUEUED_FAILURES or t.number in replaced:
            continue
        new = _enqueue_replacement(study, t)
        done.append(t.number)
        log.warning("trial %d (%s) re-run as trial %d with the same parameters", t.number, kind,
                    new)  # fmt: skip
    return done
