"""`scratch`: the same architecture from a random init, the baseline that pretraining must beat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tunewise.config import BASELINE_STRATEGY
from tunewise.strategies import STRATEGIES, Strategy


@STRATEGIES.add
@dataclass(frozen=True)
class Scratch(Strategy):
    """Train everything from random weights: answers "is pretraining worth it here?"."""

    name: ClassVar[str] = BASELINE_STRATEGY
    pretrained: ClassVar[bool] = False
    default_lr: ClassVar[float] = 1e-3
    rate_range: ClassVar[tuple[float, float]] = (3e-4, 3e-3)
    grace_epochs: ClassVar[int] = 3
