"""Never write into a folder that is not ours; a failed write leaves the previous file or none,
and a run that fails before its first checkpoint leaves no folder behind (issue 13, item 2)."""

from __future__ import annotations

import contextlib
import errno
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hardening import assert_user_error, run, snapshot

from tunewise import io as tw_io
from tunewise.errors import WriteError

FIT = ("fit", "--model", "timm:test_resnet", "--strategy", "full", "--epochs", "2", "--batch-size", "12",
       "--image-size", "32", "--num-workers", "0", "--device", "cpu")


def _fit(capsys, weights, data, out, *more):
    return run(capsys, *FIT, "--weights", weights, "--data", data, "--out", out, *more)


def _users_folder(path: Path) -> Path:
    path.mkdir()
    (path / "metrics.jsonl").write_text('{"epoch": 0, "mine": 1}\n')
    (path / "notes.txt").write_text("my notes\n")
    return path


@pytest.mark.parametrize("command", [
    ("fit", "--model", "pkg:efficientnet_lite0", "--epochs", "1", "--image-size", "32", "--num-workers", "0"),
    ("search", "--model", "pkg:efficientnet_lite0", "--epochs", "1", "--image-size", "32", "--num-workers", "0"),
    ("rank", "--models", "pkg:efficientnet_lite0,random:pkg:efficientnet_lite0", "--image-size", "32"),
])
def test_a_folder_of_the_users_own_files_is_refused_untouched(capsys, tmp_path, image_folder, command):
    folder = _users_folder(tmp_path / "mine")
    before = snapshot(folder)
    outcome = run(capsys, *command, "--data", image_folder, "--out", folder)
    assert_user_error(outcome, [str(folder), "did not write", "metrics.jsonl", "new or empty folder"])
    assert snapshot(folder) == before and sorted(p.name for p in folder.iterdir()) == ["metrics.jsonl", "notes.txt"]


def test_an_out_that_is_a_file_is_refused(capsys, tmp_path, image_folder):
    target = tmp_path / "results.txt"
    target.write_text("keep me\n")
    outcome = run(capsys, "fit", "--data", image_folder, "--out", target, "--epochs", "1", "--image-size", "32")
    assert_user_error(outcome, [str(target), "is a file"])
    assert target.read_text() == "keep me\n"


@pytest.mark.parametrize("existed", [False, True])
def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(capsys, tmp_path, image_folder, tiny_weights,
                                                                     monkeypatch, existed):
    """The same command then runs: it is not refused as "already holds a run"."""
    from tunewise import train
    from tunewise.errors import DataError

    out = tmp_path / "run"
    if existed:
        out.mkdir()
    real = train._train_one_epoch
    monkeypatch.setattr(train, "_train_one_epoch", lambda *a, **k: (_ for _ in ()).throw(
        DataError("'x.jpg' is not a readable image.")))
    assert_user_error(_fit(capsys, tiny_weights, image_folder, out), ["x.jpg"])
    assert (list(out.iterdir()) == []) if existed else not out.exists()
    monkeypatch.setattr(train, "_train_one_epoch", real)
    assert _fit(capsys, tiny_weights, image_folder, out).code == 0


SITES = ["settings.json", "best.pt", "checkpoint.pt", "model.safetensors", "record.json"]


@pytest.mark.parametrize("site", SITES)
def test_a_full_disk_at_any_write_leaves_a_resumable_folder(capsys, tmp_path, image_folder, tiny_weights,
                                                            monkeypatch, site):
    """ENOSPC injected when `site` is flushed, on its first write (the second epoch's for checkpoint.pt):
    one line naming the file; no torn or temporary file; then --resume (or the same command) finishes."""
    out = tmp_path / "run"
    writes = {"count": 0}
    real_fsync = tw_io._fsync
    last = 2 if site == "checkpoint.pt" else 1

    def fsync(tmp: str) -> None:
        if Path(tmp).name.startswith(f".{site}."):
            writes["count"] += 1
            if writes["count"] == last:
                raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(tmp)

    monkeypatch.setattr(tw_io, "_fsync", fsync)
    assert_user_error(_fit(capsys, tiny_weights, image_folder, out), [site, "no space left", "free some space"])
    monkeypatch.setattr(tw_io, "_fsync", real_fsync)
    if not out.exists():  # it failed before the first checkpoint: the same command starts afresh
        assert _fit(capsys, tiny_weights, image_folder, out).code == 0
    else:
        assert not [p for p in out.rglob("*.tmp")]
        for path in out.rglob("*.json"):
            json.loads(path.read_text())  # every file is whole
        assert run(capsys, "fit", "--resume", out).code == 0
    assert json.loads((out / "record.json").read_text())["epochs_run"] == 2


def test_torch_and_safetensors_full_disk_errors_name_the_file(tmp_path):
    """torch.save reports a full disk as a RuntimeError of its zip writer, not as an OSError."""
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"x" * 2048)

    def failing(tmp: str) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    with pytest.raises(WriteError, match=r"checkpoint\.pt.*disk is full.*MiB free.*previous copy"):
        tw_io.write_atomic(target, failing)
    assert target.read_bytes() == b"x" * 2048 and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    with pytest.raises(ZeroDivisionError):  # a fault that is not a write stays itself
        tw_io.write_atomic(target, lambda tmp: 1 / 0)


@contextlib.contextmanager
def _tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A small tmpfs mounted on `folder` (root only): a real full or read-only disk."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip() or 'not permitted'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)  # lazily: a failed writer may hold a file


def test_a_real_full_disk(capsys, tmp_path, image_folder, tiny_weights):
    """A 256 KiB disk: the run's weights do not fit. One line naming the file, no temporary file left."""
    with _tmpfs(tmp_path / "disk", "size=256k") as disk:
        outcome = _fit(capsys, tiny_weights, image_folder, disk / "run")
        assert_user_error(outcome, [str(disk / "run"), "free some space"])
        assert not list(disk.rglob("*.tmp"))


def test_a_read_only_out(capsys, tmp_path, image_folder, tiny_weights):
    with _tmpfs(tmp_path / "disk", "ro,size=64k") as disk:
        assert_user_error(_fit(capsys, tiny_weights, image_folder, disk / "run"),
                          [str(disk / "run"), "read-only", "writable"])
