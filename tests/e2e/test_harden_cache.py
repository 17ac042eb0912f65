"""Issue 13, items 8 and 7. The feature cache under faults: a damaged entry is reported (naming the
file) and rebuilt, a killed writer's temporary file is removed, a kill -9 mid-write changes nothing
a rerun computes, and two runs filling one entry at once share it. Secrets: the storage URL's
password is never printed or stored, and a resume or a worker brings it again."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from hardening import assert_user_error, run, snapshot
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tunewise.features import cached_features, entry_lock, read_entry

KEY = "0123456789abcdef01234567"

# A fit whose cache writes pause half-written until GO exists, having touched MARKER: the moment to
# kill it, or to start a second run that must wait for it.
PAUSED_FIT = """
import sys, time
from pathlib import Path
import safetensors.torch
from tunewise import features
from tunewise.cli import main

marker, go = Path(sys.argv[1]), Path(sys.argv[2])

def paused_save(tensors, tmp, metadata=None):
    data = safetensors.torch.save(tensors, metadata=metadata)
    Path(tmp).write_bytes(data[: len(data) // 2])
    marker.touch()
    while not go.exists():
        time.sleep(0.05)
    Path(tmp).write_bytes(data)

features.save_file = paused_save
sys.exit(main(sys.argv[3:]))
"""


def _fit_args(image_folder: Path, weights: Path, cache: Path, out: Path) -> list[str]:
    return ["fit", "--model", "timm:test_resnet", "--weights", str(weights), "--data", str(image_folder),
            "--image-size", "32", "--strategy", "linear_probe", "--epochs", "1", "--num-workers", "0",
            "--device", "cpu", "--cache-dir", str(cache), "--out", str(out)]


def _entries(cache: Path) -> dict[str, dict[str, torch.Tensor]]:
    found = {p.name: read_entry(p) for p in sorted(cache.glob("*.safetensors"))}
    assert all(found.values()), "an entry failed its checksum"
    return found  # type: ignore[return-value]


def _same(a: dict[str, dict[str, torch.Tensor]], b: dict[str, dict[str, torch.Tensor]]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n][k], b[n][k]) for n in a for k in ("features", "targets"))


def _val(out: Path) -> float:
    return float(json.loads((out / "record.json").read_text())["val"]["accuracy"])


def _wait(condition, process: subprocess.Popen, what: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"exited while waiting for {what}: {process.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def reference(image_folder, tiny_weights, tmp_path_factory):
    """An uninterrupted run: its cache folder, its entries and its validation accuracy."""
    from tunewise.cli import main

    root = tmp_path_factory.mktemp("reference")
    assert main(_fit_args(image_folder, tiny_weights, root / "cache", root / "run")) == 0
    return root / "cache", _entries(root / "cache"), _val(root / "run")


def _tiny() -> tuple[nn.Module, DataLoader]:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(10, 4), torch.arange(10) % 3)
    return nn.Linear(4, 3), DataLoader(data, batch_size=4)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _zero(path: Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))  # the right size, no data: a crash before it reached the disk


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # still a valid safetensors file: only the checksum sees it
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _zero, _flip_last_byte])
def test_a_damaged_entry_is_named_and_rebuilt(tmp_path, caplog, damage):
    backbone, loader = _tiny()
    first = cached_features(backbone, loader, torch.device("cpu"), KEY, tmp_path)
    entry = tmp_path / f"{KEY}.safetensors"
    damage(entry)
    with caplog.at_level(logging.INFO, logger="tunewise"):
        again = cached_features(backbone, loader, torch.device("cpu"), KEY, tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(entry) in warnings[0] and "damaged" in warnings[0]
    assert all(torch.equal(first[k], again[k]) for k in first)
    rebuilt = read_entry(entry)
    assert rebuilt is not None and all(torch.equal(first[k], rebuilt[k]) for k in first)


def test_fit_on_a_truncated_entry_warns_and_reaches_the_same_result(capsys, caplog, image_folder, tiny_weights,
                                                                    tmp_path, reference):
    """The issue's case: before, every later run died with a SafetensorError that named no file."""
    cache, expected, accuracy = reference
    shutil.copytree(cache, tmp_path / "cache")
    entry = max((tmp_path / "cache").glob("*.safetensors"), key=lambda p: p.stat().st_size)  # the train split's
    _truncate(entry)
    with caplog.at_level(logging.WARNING, logger="tunewise"):
        outcome = run(capsys, *_fit_args(image_folder, tiny_weights, tmp_path / "cache", tmp_path / "run"))
    assert outcome.code == 0 and "Traceback" not in outcome.err, outcome.err
    assert [str(entry) in r.getMessage() for r in caplog.records] == [True]
    assert _same(_entries(tmp_path / "cache"), expected)
    assert _val(tmp_path / "run") == accuracy


def test_an_entry_from_before_checksums_is_rebuilt_quietly(tmp_path, caplog):
    backbone, loader = _tiny()
    first = cached_features(backbone, loader, torch.device("cpu"), KEY, tmp_path)
    entry = tmp_path / f"{KEY}.safetensors"
    save_file(first, str(entry))  # no metadata: what tunewise wrote before entries had a checksum
    with caplog.at_level(logging.INFO, logger="tunewise"):
        cached_features(backbone, loader, torch.device("cpu"), KEY, tmp_path)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert read_entry(entry) is not None


def test_a_read_only_cache_is_read_and_never_written(tmp_path):
    """A cache that others filled, mounted read-only (root only; skipped elsewhere): no lock file can
    be made there, so its entries are read as they are, checksum-verified, and a missing one is
    extracted without being stored."""
    backbone, loader = _tiny()
    filled = tmp_path / "filled"
    first = cached_features(backbone, loader, torch.device("cpu"), KEY, filled)
    shared = tmp_path / "shared"
    shared.mkdir()
    bind = subprocess.run(["mount", "--bind", str(filled), str(shared)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({bind.stderr.decode().strip() or 'not permitted'})")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(shared)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        before = sorted(p.name for p in shared.iterdir())
        again = cached_features(backbone, loader, torch.device("cpu"), KEY, shared)
        other = cached_features(backbone, loader, torch.device("cpu"), "another-key", shared)
        assert all(torch.equal(first[k], again[k]) for k in first) and torch.equal(other["features"], first["features"])
        assert sorted(p.name for p in shared.iterdir()) == before
    finally:
        subprocess.run(["umount", "-l", str(shared)], check=False)


def test_a_dead_writers_temporary_file_is_removed_a_live_ones_kept(tmp_path):
    dead = tmp_path / ".aaaaaaaaaaaaaaaaaaaaaaaa.safetensors.x1y2.tmp"  # what a kill -9 mid-write leaves
    live = tmp_path / ".bbbbbbbbbbbbbbbbbbbbbbbb.safetensors.z3w4.tmp"
    dead.touch()
    live.write_bytes(b"half")
    hold = ("import sys; from filelock import FileLock; lock = FileLock(sys.argv[1]); lock.acquire(); "
            "print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", hold,
                               str(entry_lock(tmp_path / "bbbbbbbbbbbbbbbbbbbbbbbb.safetensors").lock_file)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        backbone, loader = _tiny()
        cached_features(backbone, loader, torch.device("cpu"), KEY, tmp_path)
        assert not dead.exists()
        assert live.read_bytes() == b"half"  # its writer holds the lock: still at work
    finally:
        holder.kill()
        holder.wait()


def test_a_kill_during_a_cache_write_changes_nothing_a_rerun_computes(capsys, image_folder, tiny_weights,
                                                                      tmp_path, reference):
    _, expected, accuracy = reference
    cache, marker = tmp_path / "cache", tmp_path / "writing"
    killed = subprocess.Popen([sys.executable, "-c", PAUSED_FIT, str(marker), str(tmp_path / "never"),
                               *_fit_args(image_folder, tiny_weights, cache, tmp_path / "killed")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait(marker.exists, killed, "the first cache write")
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    torn = list(cache.glob(".*.tmp"))
    assert len(torn) == 1 and torn[0].stat().st_size > 0 and not list(cache.glob("*.safetensors"))

    outcome = run(capsys, *_fit_args(image_folder, tiny_weights, cache, tmp_path / "rerun"))
    assert outcome.code == 0, outcome.err
    assert not list(cache.glob(".*.tmp"))
    assert _same(_entries(cache), expected)
    assert _val(tmp_path / "rerun") == accuracy


def test_two_runs_filling_one_cache_at_once_share_its_entries(capsys, caplog, image_folder, tiny_weights, tmp_path,
                                                             reference):
    """A run pauses half-way through writing an entry; a second run (this process) must wait for
    it, leave its temporary file alone, and then read what it wrote."""
    _, expected, accuracy = reference
    cache, marker, go = tmp_path / "cache", tmp_path / "writing", tmp_path / "go"
    first = subprocess.Popen([sys.executable, "-c", PAUSED_FIT, str(marker), str(go),
                              *_fit_args(image_folder, tiny_weights, cache, tmp_path / "a")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait(marker.exists, first, "the first run's cache write")
    seen: list[int] = []

    class ReleaseTheFirstWhenWaiting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "waiting for another process" in record.getMessage() and not go.exists():
                seen.append(len(list(cache.glob(".*.tmp"))))
                go.touch()

    handler = ReleaseTheFirstWhenWaiting()
    logging.getLogger("tunewise").addHandler(handler)
    unstick = threading.Timer(300, go.touch)  # should it never wait: the assertion on `seen` fails, no hang
    unstick.start()
    try:
        with caplog.at_level(logging.INFO, logger="tunewise"):
            outcome = run(capsys, *_fit_args(image_folder, tiny_weights, cache, tmp_path / "b"))
    finally:
        logging.getLogger("tunewise").removeHandler(handler)
        unstick.cancel()
        go.touch()
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert outcome.code == 0, outcome.err
    assert seen == [1]  # it waited, and the first run's write in progress was left alone

    assert not list(cache.glob(".*.tmp"))
    assert _same(_entries(cache), expected)
    assert _val(tmp_path / "a") == _val(tmp_path / "b") == accuracy
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# Issue 13, item 7: the storage URL's password is never printed or stored.

PASSWORD = "S3cret-Pw"


def _search_args(image_folder: Path, weights: Path, out: Path) -> list[str]:
    return ["search", "--model", "timm:test_resnet", "--weights", str(weights), "--data", str(image_folder),
            "--image-size", "32", "--strategies", "linear_probe", "--epochs", "1", "--rates", "1", "--seeds", "1",
            "--finalists", "1", "--no-scratch", "--no-augment", "--batch-size", "8", "--num-workers", "0",
            "--device", "cpu", "--out", str(out)]


def _files_holding(folder: Path, text: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


@pytest.mark.parametrize(("storage", "words"), [
    (f"postgresql://alice:{PASSWORD}@127.0.0.1:1/db", ["cannot reach", "postgresql://alice:***@127.0.0.1:1/db",
                                                       "TUNEWISE_STORAGE_PASSWORD"]),
    (f"not-a-url:{PASSWORD}@", ["--storage is not a database URL", "TUNEWISE_STORAGE_PASSWORD"]),
])
def test_a_storage_error_shows_no_password(capsys, image_folder, tiny_weights, tmp_path, storage, words):
    outcome = run(capsys, *_search_args(image_folder, tiny_weights, tmp_path / "search"), "--storage", storage)
    assert_user_error(outcome, words)
    assert PASSWORD not in outcome.out + outcome.err
    assert not (tmp_path / "search").exists()


@pytest.fixture
def fake_database(monkeypatch, tmp_path):
    """Optuna's RDBStorage on a SQLite file whatever URL it is given; the URLs it was given, in order."""
    import optuna

    given = []

    class Storage(optuna.storages.RDBStorage):
        def __init__(self, url, **kwargs):
            given.append(url)
            super().__init__(f"sqlite:///{tmp_path / 'study.db'}", **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", Storage)
    return given


def test_the_storage_password_is_kept_out_of_the_search_folder(capsys, caplog, monkeypatch, image_folder,
                                                                tiny_weights, tmp_path, fake_database):
    url, out = f"postgresql://alice:{PASSWORD}@db.example:5432/tunewise", tmp_path / "search"
    started = run(capsys, *_search_args(image_folder, tiny_weights, out), "--storage", url)
    assert started.code == 0, started.err
    assert fake_database[-1] == url  # connected with the password
    assert PASSWORD not in started.out + started.err and not _files_holding(out, PASSWORD)
    assert json.loads((out / "settings.json").read_text())["storage"] == "postgresql://alice:***@db.example:5432/tunewise"
    before = snapshot(out)

    monkeypatch.setenv("TUNEWISE_STORAGE_PASSWORD", PASSWORD)  # a worker or a resume on another machine
    worker = run(capsys, "search", "--worker", "--out", out)
    assert worker.code == 0 and "ran 0 trials" in worker.out, worker.err
    assert fake_database[-1] == url
    assert snapshot(out) == before
    again = run(capsys, "search", "--worker", "--out", out, "--storage", "postgresql://alice@db.example:5432/other")
    assert_user_error(again, ["postgresql://alice:***@db.example:5432/tunewise", "not in --storage"])

    monkeypatch.delenv("TUNEWISE_STORAGE_PASSWORD")
    worker = run(capsys, "search", "--worker", "--out", out, "--storage", url)  # the URL given again
    assert worker.code == 0 and fake_database[-1] == url, worker.err
    worker = run(capsys, "search", "--worker", "--out", out)  # neither: the driver's own (PGPASSWORD, ~/.pgpass)
    assert worker.code == 0 and fake_database[-1] == "postgresql://alice@db.example:5432/tunewise", worker.err
    assert snapshot(out) == before
    assert PASSWORD not in caplog.text


POSTGRES = os.environ.get("TUNEWISE_TEST_POSTGRES")


@pytest.mark.postgres
@pytest.mark.skipif(not POSTGRES, reason="set TUNEWISE_TEST_POSTGRES to a PostgreSQL URL (.ci/run does)")
def test_a_resume_and_a_worker_take_the_password_from_the_environment(capsys, monkeypatch, image_folder,
                                                                      tiny_weights, tmp_path):
    """On a real server: the folder keeps no password, so a resume or a worker brings it."""
    from sqlalchemy.engine import make_url

    assert POSTGRES is not None
    password = make_url(POSTGRES).password
    in_url = f":{password}@"  # CI's password is also its user's and database's name: look for it in the URL
    monkeypatch.delenv("PGPASSWORD", raising=False)
    args, out = _search_args(image_folder, tiny_weights, tmp_path / "search"), tmp_path / "search"
    started = run(capsys, *args, "--storage", POSTGRES)
    assert started.code == 0, started.err
    assert in_url not in started.out + started.err and not _files_holding(out, in_url)

    monkeypatch.setenv("TUNEWISE_STORAGE_PASSWORD", str(password))
    resumed = run(capsys, *args, "--resume")
    assert resumed.code == 0, resumed.err
    worker = run(capsys, "search", "--worker", "--out", out)
    assert worker.code == 0 and "ran 0 trials" in worker.out, worker.err

    monkeypatch.delenv("TUNEWISE_STORAGE_PASSWORD")
    refused = run(capsys, "search", "--worker", "--out", out)
    assert_user_error(refused, ["cannot reach the study storage", "TUNEWISE_STORAGE_PASSWORD"])
    assert in_url not in refused.err and not _files_holding(out, in_url)
