"""The top-level handler: any failure is one line and an exit code; --debug shows the traceback."""

from __future__ import annotations

import errno

import pytest
from hardening import assert_user_error, run

from tunewise import cli
from tunewise.errors import DataError, one_line


def _failing(err: Exception):
    def command(args):
        raise err
    return command


@pytest.mark.parametrize(("err", "code", "words"), [
    (DataError("bad.jpg is not a readable image. Remove it."), 2, ["bad.jpg", "remove it"]),
    (OSError(errno.ENOSPC, "No space left on device", "/runs/a/checkpoint.pt"), 2,
     ["/runs/a/checkpoint.pt", "no space left", "free some space"]),
    (PermissionError(errno.EROFS, "Read-only file system", "/ro/run"), 2, ["/ro/run", "read-only", "writable"]),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/gone.png"), 2,
     ["cannot use", "/data/gone.png", "no such file"]),
    (KeyError("val_accuracy"), 1, ["internal error", "KeyError", "--debug", "report"]),
])
def test_every_failure_is_one_line(capsys, monkeypatch, err, code, words):
    monkeypatch.setitem(cli.COMMANDS, "report", _failing(err))
    assert_user_error(run(capsys, "report", "somewhere"), words, code=code)


def test_debug_shows_the_traceback(capsys, monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "report", _failing(KeyError("val_accuracy")))
    with pytest.raises(KeyError):
        run(capsys, "report", "somewhere", "--debug")
    with pytest.raises(KeyError):
        run(capsys, "--debug", "report", "somewhere")


def test_sigterm_stops_like_ctrl_c(capsys, monkeypatch):
    import os
    import signal

    def terminated(args):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setitem(cli.COMMANDS, "fit", terminated)
    outcome = run(capsys, "fit")
    assert outcome.code == 128 + signal.SIGTERM
    assert "tunewise fit --resume" in outcome.err and "Traceback" not in outcome.err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler does not outlive the command


def test_an_error_inside_a_loader_worker_is_its_own_message():
    """torch re-raises a worker's error with the worker's traceback as its text."""
    wrapped = DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 1, in f\ntunewise.errors.DataError: 'a.png' is not a "
                        "readable image. Remove it.\n")
    assert one_line(wrapped) == "'a.png' is not a readable image. Remove it."


@pytest.mark.parametrize("command", ["export", "predict", "report"])
def test_ctrl_c_in_a_command_without_a_resume_hint_is_still_clean(capsys, monkeypatch, command):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, command, interrupted)
    outcome = run(capsys, command, "somewhere", *(["x.png"] if command == "predict" else []))
    assert outcome.code == 130 and outcome.err.startswith("interrupted") and "Traceback" not in outcome.err
