"""Workers on several machines share one study through PostgreSQL (a real server on loopback).

.ci/run starts the server and sets TUNEWISE_TEST_POSTGRES; elsewhere the test is skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tunewise.records import Leaderboard
from tunewise.study import _rates

URL = os.environ.get("TUNEWISE_TEST_POSTGRES")
pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not URL, reason="set TUNEWISE_TEST_POSTGRES to a PostgreSQL URL (.ci/run does)")]


def test_a_search_and_a_second_worker_share_one_postgres_study(image_folder, tiny_weights, tmp_path):
    folder = tmp_path / "shared"  # a shared folder stands for the cluster's shared disk
    search = [sys.executable, "-m", "tunewise", "search", "--model", "timm:test_resnet", "--weights",
              str(tiny_weights), "--data", str(image_folder), "--image-size", "32", "--strategies",
              "linear_probe,bitfit,full", "--epochs", "4", "--rates", "3", "--seeds", "2", "--no-scratch",
              "--budget", "40epochs", "--batch-size", "8", "--num-workers", "0", "--out", str(folder),
              "--storage", URL]
    coordinator = subprocess.Popen(search, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (folder / "settings.json").is_file():
        assert coordinator.poll() is None, coordinator.communicate()[1][-2000:]
    worker = subprocess.run([*search, "--worker"], capture_output=True, text=True, timeout=600)
    out, err = coordinator.communicate(timeout=600)
    assert coordinator.returncode == 0, err[-2000:]
    assert worker.returncode == 0, worker.stderr[-2000:]

    board = Leaderboard.load(folder / "leaderboard.json")
    ran = [(t.tier, t.strategy, t.lr, t.seed) for t in board.trials if t.state in ("complete", "pruned")]
    assert len(ran) == len(set(ran))  # no trial ran twice
    assert {(s, lr) for tier, s, lr, _ in ran if tier == "explore" and s == "linear_probe"} == {
        ("linear_probe", lr) for lr in _rates("linear_probe", 3)}
    assert int(worker.stdout.split("ran ")[1].split()[0]) >= 1  # the second machine did real work
