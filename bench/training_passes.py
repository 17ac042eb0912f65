"""Shared by the benchmarks that time tunewise's training against a peer's: the wall and CPU seconds
of fit()'s training passes alone, measured from outside by wrapping tunewise.train._train_one_epoch."""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Iterator


@contextlib.contextmanager
def timed_training_passes() -> Iterator[tuple[list[float], list[float]]]:
    """While the block runs, each training pass appends its wall seconds to the first list and this
    process's CPU seconds to the second."""
    module = importlib.import_module("tunewise.train")
    original, passes, cpu = module._train_one_epoch, [], []

    def timed(*a, **k):
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            return original(*a, **k)
        finally:
            passes.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu_start)

    module._train_one_epoch = timed
    try:
        yield passes, cpu
    finally:
        module._train_one_epoch = original
