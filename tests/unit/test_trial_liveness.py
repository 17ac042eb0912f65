"""A search tells a live trial (another worker's, here or on another machine) from one whose worker
died: it waits for the first and queues the second again, never both running the same trial."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from tunewise.study import workers
from tunewise.study.workers import STALE_SECONDS, beating, requeue_dead

HERE = socket.gethostname()


def _running(study: optuna.Study, **attrs) -> optuna.Trial:
    trial = study.ask()
    for key, value in {"tier": "explore", **attrs}.items():
        trial.set_user_attr(key, value)
    return trial


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _state(study: optuna.Study, trial: optuna.Trial) -> TrialState:
    return study.get_trials(deepcopy=False)[trial.number].state


@pytest.mark.skipif(os.name != "posix", reason="a process on this machine is checked with signal 0 on POSIX only")
def test_only_the_trials_of_dead_workers_are_queued_again():
    study = optuna.create_study(direction="maximize")
    now = time.time()
    exited_here = _running(study, worker=f"{HERE}:{_dead_pid()}", beat=now)
    live_here = _running(study, worker=f"{HERE}:{os.getpid()}", beat=now)
    silent_there = _running(study, worker="elsewhere:1", beat=now - STALE_SECONDS - 1)
    live_there = _running(study, worker="elsewhere:1", beat=now)
    assert requeue_dead(study) == 2
    assert [_state(study, t) for t in (exited_here, live_here, silent_there, live_there)] == [
        TrialState.FAIL, TrialState.RUNNING, TrialState.FAIL, TrialState.RUNNING]
    queued = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert len(queued) == 2 and all("worker" not in t.user_attrs and "beat" not in t.user_attrs for t in queued)


def test_a_trial_beats_while_it_runs():
    study = optuna.create_study()
    trial = _running(study)
    with beating(study, trial):
        time.sleep(0.1)
    first = study.get_trials(deepcopy=False)[0].user_attrs["beat"]
    assert time.time() - first < 5


def test_the_coordinator_waits_for_a_trial_that_another_machine_runs(monkeypatch):
    study = optuna.create_study(direction="maximize")
    remote = _running(study, worker="elsewhere:7", beat=time.time())
    threading.Timer(0.5, lambda: study.tell(remote, 0.5)).start()
    assert workers._wait_for_others(study, poll_seconds=0.05) is False  # nothing left to run here
    assert _state(study, remote) == TrialState.COMPLETE


def test_the_coordinator_runs_again_the_trial_of_a_worker_that_went_silent(monkeypatch):
    monkeypatch.setattr(workers, "STALE_SECONDS", 0.3)
    study = optuna.create_study(direction="maximize")
    remote = _running(study, worker="elsewhere:7", beat=time.time())
    assert workers._wait_for_others(study, poll_seconds=0.05) is True  # queued again, for this process to run
    assert _state(study, remote) == TrialState.FAIL
    assert len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,))) == 1
