"""Workers on several machines share one study through PostgreSQL (a real server on loopback).

.ci/run starts the server and sets TUNEWISE_TEST_POSTGRES; elsewhere the test is skipped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from tunewise.records import Leaderboard
from tunewise.study.tiers import rates

URL = os.environ.get("TUNEWISE_TEST_POSTGRES")
pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not URL, reason="set TUNEWISE_TEST_POSTGRES to a PostgreSQL URL (.ci/run does)")]


def _wait(condition, process: subprocess.Popen, what: str, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"exited while waiting for {what}: {process.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_search_and_a_second_worker_share_one_postgres_study(image_folder, tiny_weights, tmp_path):
    folder = tmp_path / "shared"  # a shared folder stands for the cluster's shared disk
    search = [sys.executable, "-m", "tunewise", "search", "--model", "timm:test_resnet", "--weights",
              str(tiny_weights), "--data", str(image_folder), "--image-size", "32", "--strategies",
              "linear_probe,bitfit,full", "--epochs", "4", "--rates", "3", "--seeds", "2", "--no-scratch",
              "--budget", "40epochs", "--batch-size", "8", "--num-workers", "0", "--out", str(folder),
              "--storage", URL]
    coordinator = subprocess.Popen(search, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait(lambda: (folder / "settings.json").is_file(), coordinator, "settings.json")
    name = json.loads((folder / "settings.json").read_text())["study"]
    _wait(lambda: name in optuna.get_all_study_names(storage=URL), coordinator, "the study")  # made just after
    study = optuna.load_study(study_name=name, storage=URL)

    def states(*wanted):
        return study.get_trials(deepcopy=False, states=wanted)

    # Pause the coordinator while trials wait, so the second machine surely gets some: no race.
    _wait(lambda: states(TrialState.WAITING), coordinator, "queued trials")
    coordinator.send_signal(signal.SIGSTOP)
    while not states(TrialState.WAITING):  # it took the last one before it stopped: let it queue more
        coordinator.send_signal(signal.SIGCONT)
        time.sleep(0.05)
        coordinator.send_signal(signal.SIGSTOP)
    worker = subprocess.Popen([*search, "--worker"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait(lambda: any(t.user_attrs.get("worker", "").endswith(f":{worker.pid}") for t in states(TrialState.COMPLETE,
                                                                                                TrialState.PRUNED)),
          worker, "the worker's first trial")
    coordinator.send_signal(signal.SIGCONT)

    out, err = coordinator.communicate(timeout=600)
    assert coordinator.returncode == 0, err[-2000:]
    worker_out, worker_err = worker.communicate(timeout=600)
    assert worker.returncode == 0, worker_err[-2000:]

    board = Leaderboard.load(folder / "leaderboard.json")
    ran = [(t.tier, t.strategy, t.lr, t.seed, t.augment) for t in board.trials if t.state in ("complete", "pruned")]
    assert len(ran) == len(set(ran))  # no trial ran twice
    assert {(s, lr) for tier, s, lr, _, _ in ran if tier == "explore" and s == "linear_probe"} == {
        ("linear_probe", lr) for lr in rates("linear_probe", 3)}
    assert int(worker_out.split("ran ")[1].split()[0]) >= 1  # the second machine's own count agrees
    assert board.winner is not None
