"""The span search of extractive question answering, in numpy alone: the QA task's decoding
(tasks/_squad.py) and the torch-free ONNX runner (ship/onnx_model.py) both use it."""

from __future__ import annotations

import numpy as np


def best_span(start: np.ndarray, end: np.ndarray, offsets: list, max_answer_tokens: int,
              n_best: int = 20) -> tuple[float, int, int] | None:
    """The highest scoring valid span of one window as (score, start char, end char), or None.

    Shape: start, end (L,), offsets of length L (None outside the context).
    """
    found = None
    for s in np.argsort(start)[::-1][:n_best]:
        for e in np.argsort(end)[::-1][:n_best]:
            if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_tokens:
                continue
            score = float(start[s] + end[e])
            if found is None or score > found[0]:
                found = (score, offsets[s][0], offsets[e][1])
    return found
