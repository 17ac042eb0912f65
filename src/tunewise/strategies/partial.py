"""`partial`: only the last k layer groups of the backbone train, with the head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from tunewise.strategies import STRATEGIES, Strategy
from tunewise.strategies.freezing import check_group_count, unfreeze_last_groups

if TYPE_CHECKING:
    from tunewise.tasks import TaskModel


@STRATEGIES.add
@dataclass(frozen=True)
class Partial(Strategy):
    """Fine-tune the top of the network; the early, generic layers stay as pretrained.

    Args:
        k: how many layer groups, counted from the output, train (1..number of groups).
    """

    k: int = 2
    name: ClassVar[str] = "partial"
    default_lr: ClassVar[float] = 3e-4
    knob_grid: ClassVar[tuple[dict, ...]] = ({"k": 2}, {"k": 1}, {"k": 4})
    search_order: ClassVar[int | None] = 4

    def check_model(self, model: TaskModel) -> None:
        check_group_count("k", self.k, model)

    def prepare(self, model: TaskModel) -> None:
        self.check_model(model)
        unfreeze_last_groups(model, self.k)
