"""Studies on a real PostgreSQL server (started by the ``postgres`` fixture): the trial-count
lock, several worker processes stopping at exactly n_trials, and a SIGKILLed worker whose
trial is re-run with the same parameters by the next workers, exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from safetensors.torch import save_file
from tune_helpers import smoke_runtime

from d2v_pipeline.pipelines.pretrain.nodes import _configs
from d2v_pipeline.pipelines.tune.export import trials_table
from d2v_pipeline.pipelines.tune.knobs import default_knobs
from d2v_pipeline.pipelines.tune.storage import count_lock, open_storage, trial_counts

WORKER = Path(__file__).with_name("tune_worker.py")
TIMEOUT_S = 300  # generous: the machine is shared


def _lock_in_thread(lock: Any, name: str, inside: threading.Event, release: threading.Event):
    def hold() -> None:
        with count_lock(lock, name):
            inside.set()
            release.wait(TIMEOUT_S)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def test_postgres_count_lock_admits_one_worker_per_study_and_dies_with_its_holder(postgres_url):
    _, lock = open_storage(postgres_url, None)
    assert lock.url == postgres_url and lock.path is None
    first_in, first_go = threading.Event(), threading.Event()
    second_in, second_go = threading.Event(), threading.Event()
    first = _lock_in_thread(lock, "s", first_in, first_go)
    assert first_in.wait(TIMEOUT_S)
    second = _lock_in_thread(lock, "s", second_in, second_go)  # its own connection
    assert not second_in.wait(1.0)  # waits while the first holds the study's lock
    other_in = threading.Event()
    _lock_in_thread(lock, "another study", other_in, threading.Event())
    assert other_in.wait(TIMEOUT_S)  # another study's workers do not wait for it
    first_go.set()
    assert second_in.wait(TIMEOUT_S)  # ... and gets it once the first lets go
    second_go.set()
    first.join(TIMEOUT_S)
    second.join(TIMEOUT_S)

    # a worker SIGKILLed while holding the lock: the server drops it with the connection
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from d2v_pipeline.pipelines.tune.storage import count_lock, open_storage\n"
         "_, lock = open_storage(sys.argv[1], None)\n"
         "with count_lock(lock, 's'):\n"
         "    print('held', flush=True)\n"
         "    time.sleep(600)\n",
         postgres_url],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        after_in, after_go = threading.Event(), threading.Event()
        _lock_in_thread(lock, "s", after_in, after_go)
        assert not after_in.wait(1.0)
        holder.send_signal(signal.SIGKILL)
        holder.wait(TIMEOUT_S)
        assert after_in.wait(TIMEOUT_S)
        after_go.set()
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.stdout.close()


class Workers:
    """Tuning worker processes (tune_worker.py) on one set of inputs in ``root``."""

    def __init__(self, root: Path, data: dict, pretrain: dict, tune: dict) -> None:
        self.root = root
        save_file(data["model_input"], str(root / "arrays.safetensors"))
        inputs = {"dataset_info": data["dataset_info"], "label_subsets": data["label_subsets"],
                  "pretrain": pretrain, "tune": tune, "runtime": smoke_runtime()}  # fmt: skip
        (root / "inputs.json").write_text(json.dumps(inputs))
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, names: list[str], go: str) -> None:
        """Start workers that begin their studies together once ``go`` exists."""
        for name in names:
            with (self.root / f"{name}.log").open("w") as log:  # a file: a pipe could fill
                self.procs[name] = subprocess.Popen(
                    [sys.executable, str(WORKER), str(self.root), str(self.root / "study"),
                     str(self.root / f"{name}.json"), go],
                    stdout=log, stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONWARNINGS": "ignore"},
                )  # fmt: skip
        deadline = time.monotonic() + TIMEOUT_S
        while not all((self.root / f"{n}.ready").exists() for n in names):
            alive = all(self.procs[n].poll() is None for n in names)
            assert alive and time.monotonic() < deadline, f"workers did not start: {self.logs()}"
            time.sleep(0.05)
        (self.root / go).touch()

    def finish(self, names: list[str]) -> list[dict[str, Any]]:
        """Wait for the workers; their run records."""
        for name in names:
            self.procs[name].wait(timeout=TIMEOUT_S)
            assert self.procs[name].returncode == 0, self.log(name)[-3000:]
        return [json.loads((self.root / f"{n}.json").read_text()) for n in names]

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{self.log(n)[-2000:]}" for n in self.procs)

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(TIMEOUT_S)


def _load(url: str) -> optuna.Study:
    return optuna.load_study(study_name="d2v_image", storage=open_storage(url, None)[0])


def test_postgres_workers_stop_at_exactly_n_trials(
    image_data, pretrain_params, tune_params, postgres_url, tmp_path
):
    tune = tune_params(n_trials=4, storage=postgres_url)
    workers = Workers(tmp_path, image_data, pretrain_params, tune)
    try:
        workers.start(["w0", "w1"], go="go")
        records = workers.finish(["w0", "w1"])
    finally:
        workers.kill_all()
    ran = sorted(n for r in records for n in r["trials_run"])
    assert ran == [0, 1, 2, 3]  # each trial run by exactly one worker
    assert all(r["trials_run"] for r in records), workers.logs()  # both took part
    assert all(r["counted_after"] == 4 for r in records)
    trials = _load(postgres_url).get_trials()
    assert len(trials) == 4 and sum(trial_counts(t) for t in trials) == 4
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert sum(t.user_attrs.get("enqueued") == "default" for t in trials) == 1


def test_killed_worker_trial_is_rerun_with_its_parameters_exactly_once(
    image_data, pretrain_params, tune_params, postgres_url, tmp_path
):
    # sampled configs only (no default trial), no pruning: the re-run must COMPLETE; trials
    # long enough (a probe every 4 of 24 steps) that the worker is surely killed mid-trial
    n_trials = 3
    tune = tune_params(n_trials=n_trials, storage=postgres_url, enqueue_default=False, steps=24)
    tune["pruner"] = {"type": "none"}
    workers = Workers(tmp_path, image_data, pretrain_params, tune)
    try:
        workers.start(["doomed"], go="go_doomed")
        storage, deadline, running = open_storage(postgres_url, None)[0], time.monotonic(), []
        while not running:  # a trial with its parameters, pretraining (a probe reported)
            assert time.monotonic() < deadline + TIMEOUT_S, workers.logs()
            assert workers.procs["doomed"].poll() is None, workers.logs()
            time.sleep(0.05)
            if "d2v_image" not in [s.study_name for s in storage.get_all_studies()]:
                continue
            study = optuna.load_study(study_name="d2v_image", storage=storage)
            running = [t for t in study.get_trials(states=(TrialState.RUNNING,))
                       if t.intermediate_values]  # fmt: skip
        workers.procs["doomed"].send_signal(signal.SIGKILL)
        workers.procs["doomed"].wait(TIMEOUT_S)
        (lost,) = [t for t in _load(postgres_url).get_trials() if t.number == running[0].number]
        assert lost.state == TrialState.RUNNING and lost.params  # left behind mid-trial
        # two workers at once: both see the dead worker's trial; only one may replace it
        workers.start(["w0", "w1"], go="go_rest")
        records = workers.finish(["w0", "w1"])
    finally:
        workers.kill_all()

    study = _load(postgres_url)
    trials = {t.number: t for t in study.get_trials()}
    stale = trials[lost.number]
    assert stale.state == TrialState.FAIL and stale.user_attrs["fail_kind"] == "stale"
    assert stale.user_attrs["fail_reason"] == "stale: worker process gone"
    replacements = [t for t in trials.values() if t.user_attrs.get("replaces_trial") == lost.number]
    assert len(replacements) == 1  # exactly once
    (rerun,) = replacements
    assert stale.user_attrs["replaced_by"] == rerun.number
    assert rerun.state == TrialState.COMPLETE and rerun.params == lost.params
    # the study holds exactly n_trials counted trials, plus the stale one
    assert sum(trial_counts(t) for t in trials.values()) == n_trials
    assert len(trials) == n_trials + 1
    ran = sorted(n for r in records for n in r["trials_run"])
    assert rerun.number in ran and len(ran) == len(set(ran))
    assert ran == sorted(n for n in trials if n > lost.number)
    logs = workers.log("w0") + workers.log("w1")
    line = f"trial {lost.number} marked failed (stale: worker process gone); re-run as trial "
    assert logs.count(f"{line}{rerun.number} with the same parameters") == 1
    _, method, train = _configs("data2vec", image_data["dataset_info"], pretrain_params)
    table = trials_table(study, default_knobs(method, train), []).set_index("number")
    assert table.loc[lost.number, "replaced_by"] == rerun.number
    assert table.loc[rerun.number, "replaces"] == lost.number
    assert table["replaces"].notna().sum() == 1
    print(f"killed-worker study: {len(trials)} trials, {n_trials} counted, trial "
          f"{lost.number} (stale) re-run as trial {rerun.number}")  # fmt: skip
