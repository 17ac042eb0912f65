"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import contextlib
import errno
import importlib
import re
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn


class TunewiseError(ValueError):
    """Bad input: the message says what was given, what is allowed and what to do."""


class DataError(TunewiseError):
    """The data cannot be read or is not usable for the task."""


class BackboneError(TunewiseError):
    """The backbone cannot be found or loaded."""


class ConfigError(TunewiseError):
    """A setting is out of its allowed range."""


class RunFolderError(TunewiseError):
    """A run folder is missing, damaged, edited, or is not tunewise's to write into."""


class WriteError(TunewiseError):
    """A file could not be written: a read-only or full disk, or no permission."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: the run stops where it stands and its folder resumes."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.exit_code = 128 + signal_number


_SIGNALLED: list[int] = []


def signalled(signal_number: int) -> NoReturn:
    """What a signal handler calls: raise Interrupted, and remember it. Python swallows an exception
    raised in a destructor or a weakref callback ("Exception ignored in ..."), and a signal can land
    in one: `stop_if_signalled` raises it again at the training loop's next batch."""
    _SIGNALLED.append(signal_number)
    raise Interrupted(signal_number)


def stop_if_signalled() -> None:
    """Raise the Interrupted of a signal whose first raise was swallowed (see `signalled`)."""
    if _SIGNALLED:
        raise Interrupted(_SIGNALLED[-1])


def forget_signals() -> None:
    """The command that installed the handler is done: its signals are handled."""
    _SIGNALLED.clear()


def quiet_when_swallowed(previous: Callable[[Any], None]) -> Callable[[Any], None]:
    """A `sys.unraisablehook`: a Ctrl-C or SIGTERM that Python swallowed in a destructor (a DataLoader's
    `__del__` waiting for its workers, say) is not printed as a traceback: it is remembered, and
    `stop_if_signalled` raises it again. Anything else goes to `previous`, the hook that was there."""
    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            if not _SIGNALLED:
                _SIGNALLED.append(getattr(unraisable.exc_value, "exit_code", 128 + signal.SIGINT) - 128)
            return
        previous(unraisable)

    return hook


def interrupt_behind(err: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM that the program was stopping for when `err` was raised, or None. torch
    reports a loader worker that died of the same signal (one still starting, or one that a SIGTERM
    to the whole group killed) as a RuntimeError raised while the KeyboardInterrupt unwinds: the
    program must still stop, not report a failed worker (or a search mark its trial failed)."""
    cause = err.__context__
    while cause is not None and not isinstance(cause, KeyboardInterrupt):
        cause = cause.__context__
    return cause


def stopped_quietly(module: str, function: str, *args: object) -> None:
    """`module.function(*args)` as a helper process's whole work (a search's --workers): Ctrl-C and
    SIGTERM end it without a traceback (its parent says how to resume). Named by strings, so that the
    handlers are in place before the module's imports (torch: seconds); its parent starts it with
    Ctrl-C ignored until then (study.workers.drain)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.unraisablehook = quiet_when_swallowed(sys.unraisablehook)
    with contextlib.suppress(KeyboardInterrupt):
        getattr(importlib.import_module(module), function)(*args)


_WORKER = re.compile(r"Caught (\w+) in DataLoader worker process \d+")


def one_line(err: BaseException) -> str:
    """What went wrong, in one line: an error raised inside a DataLoader worker arrives wrapped in
    the worker's traceback text; its own message is that text's last line."""
    text = str(err)
    if _WORKER.search(text):
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = re.sub(r"^[\w.]+(Error|Exception): ", "", last)
    return " ".join(text.split())


WRITE_FAULTS = {errno.ENOSPC: "free some space or write elsewhere", errno.EDQUOT: "free some space or write elsewhere",
                errno.EROFS: "pass a writable folder"}


def write_error(path: object, err: BaseException) -> WriteError:
    """A WriteError that names the path and the cause, and says what to do."""
    cause = err.strerror if isinstance(err, OSError) and err.strerror else one_line(err)
    hint = WRITE_FAULTS.get(getattr(err, "errno", None) or -1, "check the disk and the folder's permissions")
    return WriteError(f"cannot write {str(path)!r}: {cause}. {hint[0].upper()}{hint[1:]}.")


def file_error(err: OSError) -> TunewiseError:
    """An OSError about a named file, as one line: a full or read-only disk is a failed write; anything
    else (missing, no permission, a folder where a file was expected) a file that cannot be used."""
    if err.errno in WRITE_FAULTS:
        return write_error(err.filename, err)
    return TunewiseError(f"cannot use {str(err.filename)!r}: {err.strerror or one_line(err)}. Check the path and "
                         "its permissions.")
