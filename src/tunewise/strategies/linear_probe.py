"""`linear_probe`: the backbone frozen, a new linear head trained on features computed once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from tunewise.strategies import STRATEGIES, Strategy
from tunewise.strategies.freezing import freeze


@STRATEGIES.register("linear_probe")
@dataclass(frozen=True)
class LinearProbe(Strategy):
    """Train only the head. fit() sees the frozen backbone and trains on cached features."""

    name: ClassVar[str] = "linear_probe"
    default_lr: ClassVar[float] = 3e-3

    def prepare(self, model: nn.Module) -> None:
        freeze(model.backbone)
