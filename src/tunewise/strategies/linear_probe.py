"""`linear_probe`: the backbone frozen, a new linear head trained on features computed once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from tunewise.strategies import STRATEGIES, Strategy
from tunewise.strategies.freezing import freeze

if TYPE_CHECKING:
    from tunewise.tasks import TaskModel


@STRATEGIES.add
@dataclass(frozen=True)
class LinearProbe(Strategy):
    """Train only the head. fit() sees the frozen backbone and trains on cached features."""

    name: ClassVar[str] = "linear_probe"
    default_lr: ClassVar[float] = 3e-3
    head_only: ClassVar[bool] = True
    rate_range: ClassVar[tuple[float, float]] = (1e-3, 3e-2)
    # Detection and segmentation: a frozen backbone's "head" is a whole neck and detector or decoder
    # trained from scratch, not one linear layer: rates like a network's. (bench/detection.py: 1e-3
    # reached test mAP 0.51 in 6 epochs; the linear-head middle rate, 5.5e-3, stayed at val mAP 0.006.)
    deep_head_rate_range: ClassVar[tuple[float, float] | None] = (3e-4, 3e-3)
    search_order: ClassVar[int | None] = 0

    def prepare(self, model: TaskModel) -> None:
        freeze(model.backbone)
