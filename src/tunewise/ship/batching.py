"""Dynamic batching: the inputs of concurrent requests share one model call.

Each input is queued with a future; one worker thread takes the first waiting input, waits up to a short
window for more (or until the batch is full), runs the model once on them, and answers each future.
A lone request waits at most the window; under load the batches fill and the model runs at its
batched rate. The model is only ever called from that thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]


@dataclass
class _Item:
    input: Any
    answer: Future[Row]


class Batcher:
    """Queue inputs from any thread, answer them from one worker thread in batches.

    Args:
        predict: the model: a list of inputs in, one row per input out, in order.
        max_batch: the most inputs one call takes.
        window_ms: how long the first input of a batch waits for others.
    """

    def __init__(self, predict: Callable[[list[Any]], list[Row]], max_batch: int = 32,
                 window_ms: float = 5.0) -> None:
        self.predict = predict
        self.max_batch = max_batch
        self.window = window_ms / 1000
        self.batches = 0
        """Model calls so far."""
        self.inputs = 0
        """Inputs answered (or failed) so far."""
        self.largest = 0
        """The largest batch so far."""
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="tunewise-batcher", daemon=True)
        self._worker.start()

    def submit(self, inputs: list[Any]) -> list[Future[Row]]:
        """Queue `inputs`; each future gets its row, or the model's exception."""
        items = [_Item(x, Future()) for x in inputs]
        for item in items:
            self._queue.put(item)
        return [item.answer for item in items]

    def close(self) -> None:
        """Answer what is queued, then stop the worker."""
        self._queue.put(None)
        self._worker.join()

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._answer(batch)

    def _next_batch(self) -> list[_Item] | None:
        """The first waiting input and those that arrive within the window, up to max_batch; None: stop."""
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self.window
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:  # stop after this batch
                self._queue.put(None)
                break
            batch.append(item)
        return batch

    def _answer(self, batch: list[_Item]) -> None:
        """Run the model on the batch; if it fails, on each input alone, so that one input the model
        cannot take fails its own request only."""
        self.batches += 1
        self.inputs += len(batch)
        self.largest = max(self.largest, len(batch))
        try:
            rows = self.predict([item.input for item in batch])
            if len(rows) != len(batch):
                raise RuntimeError(f"the model gave {len(rows)} rows for {len(batch)} inputs")
        except Exception as err:  # the worker keeps serving
            if len(batch) > 1:
                self.inputs -= len(batch)
                for item in batch:
                    self._answer([item])
            else:
                batch[0].answer.set_exception(err)
            return
        for item, row in zip(batch, rows, strict=True):
            item.answer.set_result(row)
