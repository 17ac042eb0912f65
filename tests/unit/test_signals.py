"""A SIGTERM whose Interrupted Python swallowed (it landed in a destructor) still stops the run."""

from __future__ import annotations

import gc
import signal
import sys

import pytest

from tunewise.errors import Interrupted, forget_signals, quiet_when_swallowed, signalled, stop_if_signalled


def test_a_swallowed_interrupt_is_raised_again_at_the_next_safe_point():
    class Landing:
        def __del__(self):  # where the signal lands: Python prints "Exception ignored" and goes on
            signalled(signal.SIGTERM)

    try:
        Landing()
        gc.collect()
        with pytest.raises(Interrupted) as raised:
            stop_if_signalled()
        assert raised.value.exit_code == 128 + signal.SIGTERM
    finally:
        forget_signals()
    stop_if_signalled()  # handled: nothing more to raise


def test_a_swallowed_interrupt_prints_no_traceback_and_other_errors_still_print(monkeypatch, capsys):
    """CI saw a SIGTERM land in a DataLoader's __del__: Python printed "Exception ignored ... Traceback"
    although the run then stopped cleanly."""
    class Landing:
        def __init__(self, error):
            self.error = error

        def __del__(self):
            raise self.error

    monkeypatch.setattr("sys.unraisablehook", quiet_when_swallowed(sys.__unraisablehook__))
    try:
        Landing(KeyboardInterrupt())  # Ctrl-C, from Python's own handler
        gc.collect()
        assert capsys.readouterr().err == ""
        with pytest.raises(Interrupted) as raised:
            stop_if_signalled()
        assert raised.value.exit_code == 128 + signal.SIGINT
        Landing(RuntimeError("a real fault"))
        gc.collect()
        assert "a real fault" in capsys.readouterr().err
    finally:
        forget_signals()
