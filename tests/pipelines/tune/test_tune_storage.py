"""The storage module: printable storage names, which trials count, stale and interrupted
trials re-run with their parameters (on a journal file; PostgreSQL: test_tune_postgres.py)."""

from __future__ import annotations

import os
import socket
import time

import optuna
from optuna.trial import TrialState

from d2v_pipeline.pipelines.tune.storage import (
    COUNTED_FAILURES,
    JOURNAL_FILE,
    describe_storage,
    fail_stale_trials,
    open_storage,
    requeue_interrupted_trials,
    trial_counts,
)


def test_storage_description_hides_passwords(tmp_path):
    url = "postgresql://tuner:s3cret@db.example:5432/optuna"
    assert "s3cret" not in describe_storage(url, None)
    assert describe_storage(None, tmp_path).endswith("study.journal")


def _trial_in_state(
    study: optuna.Study, state: TrialState, mask_prob: float | None = None, **attrs: object
) -> None:
    if mask_prob is not None:  # a trial that was given a parameter value
        study.enqueue_trial({"mask_prob": mask_prob})
    trial = study.ask()
    if mask_prob is not None:
        assert trial.suggest_float("mask_prob", 0.3, 0.8) == mask_prob
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    if state != TrialState.RUNNING:
        study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)


def test_only_verdicts_on_a_config_and_live_trials_count_towards_n_trials():
    study = optuna.create_study(direction="maximize")
    _trial_in_state(study, TrialState.COMPLETE)
    _trial_in_state(study, TrialState.PRUNED)
    _trial_in_state(study, TrialState.RUNNING)
    for kind in COUNTED_FAILURES:  # NaN loss, non-finite features: not worth re-running
        _trial_in_state(study, TrialState.FAIL, fail_kind=kind)
    for kind in ("stale", "interrupted", "error", None):  # not the config's fault: re-run
        _trial_in_state(study, TrialState.FAIL, **({} if kind is None else {"fail_kind": kind}))
    counted = [trial_counts(t) for t in study.get_trials(deepcopy=False)]
    n_counted = 3 + len(COUNTED_FAILURES)
    assert counted == [True] * n_counted + [False] * 4


def test_running_trials_without_a_recent_heartbeat_or_a_live_worker_are_failed_as_stale(tmp_path):
    storage, lock = open_storage(None, tmp_path)
    assert lock.path == tmp_path / JOURNAL_FILE and lock.path.parent.is_dir()
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    host, now = socket.gethostname(), time.time()
    # another host, silent for 10 minutes: stale after the 5-minute limit
    _trial_in_state(study, TrialState.RUNNING, mask_prob=0.37, worker_host="elsewhere",
                    heartbeat=now - 600, enqueued="default")  # fmt: skip
    # another host that beat a second ago: alive
    _trial_in_state(study, TrialState.RUNNING, worker_host="elsewhere", heartbeat=now - 1)
    # this host, a live process (the test's parent), recent heartbeat: alive
    _trial_in_state(study, TrialState.RUNNING, worker_host=host, worker_pid=os.getppid(),
                    heartbeat=now)  # fmt: skip
    assert fail_stale_trials(study, storage, stale_after_s=300) == [0]
    trials = optuna.load_study(study_name="s", storage=open_storage(None, tmp_path)[0]).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING,
                                         TrialState.WAITING]  # fmt: skip
    assert trials[0].user_attrs["fail_kind"] == "stale"
    assert trials[0].user_attrs["fail_reason"].startswith("stale: no heartbeat for 6")
    assert not trial_counts(trials[0])  # not counted ...
    # ... and its parameters wait to be run again, by the trial it names
    assert trials[0].user_attrs["replaced_by"] == 3
    assert trials[3].user_attrs == {"replaces_trial": 0, "enqueued": "default"}
    assert trials[3].system_attrs["fixed_params"] == {"mask_prob": 0.37}
    rerun = study.ask()
    assert rerun.number == 3 and rerun.suggest_float("mask_prob", 0.3, 0.8) == 0.37
    # found again (another worker, later): failed already, so not replaced twice
    assert fail_stale_trials(study, storage, stale_after_s=300) == []
    assert requeue_interrupted_trials(study) == []
    assert len(study.trials) == 4


def test_interrupted_trials_are_rerun_with_their_parameters_once_and_errors_are_not(tmp_path):
    storage, _ = open_storage(None, tmp_path)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    _trial_in_state(study, TrialState.FAIL, mask_prob=0.55, fail_kind="interrupted")  # Ctrl-C
    _trial_in_state(study, TrialState.FAIL, mask_prob=0.65, fail_kind="error")  # a bug: fix it
    _trial_in_state(study, TrialState.FAIL, mask_prob=0.75, fail_kind="nan_loss")  # a verdict
    assert requeue_interrupted_trials(study) == [0]
    assert requeue_interrupted_trials(study) == []  # the next worker: already replaced
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [(t.number, t.user_attrs) for t in waiting] == [(3, {"replaces_trial": 0})]
    assert waiting[0].system_attrs["fixed_params"] == {"mask_prob": 0.55}
