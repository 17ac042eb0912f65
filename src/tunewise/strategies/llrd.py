"""`llrd`: layer-wise learning-rate decay (discriminative fine-tuning).

Howard & Ruder 2018 (https://arxiv.org/abs/1801.06146); Clark et al. 2020 (ELECTRA). The head
trains at the base rate, the last backbone group at base * decay, each earlier one at another
factor of decay. Every trainable parameter is in exactly one group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from tunewise.errors import ConfigError
from tunewise.strategies import STRATEGIES, Strategy
from tunewise.strategies.freezing import backbone_groups

if TYPE_CHECKING:
    from tunewise.tasks import TaskModel


@STRATEGIES.add
@dataclass(frozen=True)
class LayerwiseDecay(Strategy):
    """Args:
        decay: rate factor per layer group, going from the output towards the input (0, 1].
    """

    decay: float = 0.75
    name: ClassVar[str] = "llrd"
    default_lr: ClassVar[float] = 1e-3
    grace_epochs: ClassVar[int] = 2
    knob_grid: ClassVar[tuple[dict, ...]] = ({"decay": 0.75}, {"decay": 0.5}, {"decay": 0.9})
    search_order: ClassVar[int | None] = 5

    def check(self) -> None:
        if not 0 < self.decay <= 1:
            raise ConfigError(f"decay must be in (0, 1], got {self.decay!r}.")

    def param_groups(self, model: TaskModel, lr: float) -> list[dict]:
        groups = [{"params": list(model.head.parameters()), "lr": lr}]
        for depth, params in enumerate(reversed(backbone_groups(model)), start=1):
            groups.append({"params": params, "lr": lr * self.decay**depth})
        return groups
