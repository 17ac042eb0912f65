"""A SIGTERM whose Interrupted Python swallowed (it landed in a destructor) still stops the run."""

from __future__ import annotations

import gc
import signal

import pytest

from tunewise.errors import Interrupted, forget_signals, signalled, stop_if_signalled


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
