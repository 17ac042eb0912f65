"""The scorer registry: a scorer is one function in one module of tunewise/ranking/, registered here."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

from tunewise.registry import Registry

if TYPE_CHECKING:
    import numpy as np


class Scorer(Protocol):
    """A registered scorer: the function, marked with what it reads."""

    needs_source_head: bool

    def __call__(self, features: np.ndarray, labels: np.ndarray, source_probs: np.ndarray | None = None) -> float: ...


SCORERS: Registry[Scorer] = Registry("scorer")


def scorer(name: str, *, needs_source_head: bool = False) -> Callable[[Callable[..., float]], Scorer]:
    """Register a scorer `score(features, labels, source_probs=None) -> float` under `name`.

    Args:
        needs_source_head: it reads the candidate's own source classifier's probabilities (LEEP,
            NCE); candidates without one are not scored by it.
    """

    def bind(function: Callable[..., float]) -> Scorer:
        marked = cast(Scorer, function)  # a function, and it has the attribute from here on
        marked.needs_source_head = needs_source_head
        return SCORERS.register(name)(marked)

    return bind
