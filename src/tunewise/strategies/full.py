"""`full`: every parameter trains, from the pretrained weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tunewise.strategies import STRATEGIES, Strategy


@STRATEGIES.add
@dataclass(frozen=True)
class Full(Strategy):
    """Full fine-tuning: the whole network at one rate, lower than a head alone would take."""

    name: ClassVar[str] = "full"
    default_lr: ClassVar[float] = 3e-4
    rate_range: ClassVar[tuple[float, float]] = (3e-5, 1e-3)
    grace_epochs: ClassVar[int] = 2
    search_order: ClassVar[int | None] = 7
