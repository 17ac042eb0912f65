"""The scorer registry: a scorer is one function in one module of tunewise/ranking/, registered here."""

from __future__ import annotations

from collections.abc import Callable

from tunewise.registry import Registry

Scorer = Callable[..., float]
SCORERS: Registry[Scorer] = Registry("scorer")


def scorer(name: str, *, needs_source_head: bool = False) -> Callable[[Scorer], Scorer]:
    """Register a scorer `score(features, labels, source_probs=None) -> float` under `name`.

    Args:
        needs_source_head: it reads the candidate's own source classifier's probabilities (LEEP,
            NCE); candidates without one are not scored by it.
    """

    def bind(function: Scorer) -> Scorer:
        function.needs_source_head = needs_source_head  # type: ignore[attr-defined]
        return SCORERS.register(name)(function)

    return bind
