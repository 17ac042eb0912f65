"""`gradual_unfreeze`: the head first, then one more layer group per stage, deepest first.

ULMFiT (Howard & Ruder 2018, https://arxiv.org/abs/1801.06146). The stage is derived from the
epoch alone, so a resumed run does the same. No `requires_grad` flips mid-run (safe under DDP):
every parameter is in the optimizer from the start, and groups not yet unfrozen sit at a
learning rate of exactly zero (their group's `scale` is 0), which leaves them bit-identical;
their BatchNorm layers stay in eval mode until their stage comes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from tunewise.errors import ConfigError
from tunewise.strategies import STRATEGIES, Strategy
from tunewise.strategies.freezing import backbone_groups, unfreeze

if TYPE_CHECKING:
    from tunewise.tasks import TaskModel


@STRATEGIES.add
@dataclass(frozen=True)
class GradualUnfreeze(Strategy):
    """Args:
        epochs_per_stage: epochs before the next layer group (from the output) joins.
    """

    epochs_per_stage: int = 1
    name: ClassVar[str] = "gradual_unfreeze"
    default_lr: ClassVar[float] = 3e-4
    grace_epochs: ClassVar[int] = 3
    knob_grid: ClassVar[tuple[dict, ...]] = ({"epochs_per_stage": 1}, {"epochs_per_stage": 2})
    search_order: ClassVar[int | None] = 6

    def check(self) -> None:
        if not isinstance(self.epochs_per_stage, int) or self.epochs_per_stage < 1:
            raise ConfigError(f"epochs_per_stage must be a positive integer, got {self.epochs_per_stage!r}.")

    def prepare(self, model: TaskModel) -> None:
        unfreeze(model)

    def param_groups(self, model: TaskModel, lr: float) -> list[dict]:
        groups = [{"params": list(model.head.parameters()), "lr": lr, "stage": 0}]
        for depth, params in enumerate(reversed(backbone_groups(model)), start=1):
            groups.append({"params": params, "lr": lr, "stage": depth, "scale": 0.0})
        return groups

    def unfrozen_groups(self, epoch: int) -> int:
        """How many backbone layer groups, from the output, train in `epoch`."""
        return epoch // self.epochs_per_stage

    def on_epoch_start(self, model: TaskModel, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        unfrozen = self.unfrozen_groups(epoch)
        for group in optimizer.param_groups:
            group["scale"] = 1.0 if group["stage"] <= unfrozen else 0.0
