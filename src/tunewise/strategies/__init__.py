"""Fine-tuning strategies, registered by name. Each is a frozen dataclass of its knobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from tunewise.registry import Registry
from tunewise.strategies.freezing import trainable_parameters

STRATEGIES: Registry = Registry("strategy")


@dataclass(frozen=True)
class Strategy:
    """Base: every hook is a no-op, and the optimizer sees every trainable parameter at `lr`."""

    name: ClassVar[str] = "base"
    pretrained: ClassVar[bool] = True
    """Whether the backbone starts from pretrained weights."""
    default_lr: ClassVar[float] = 1e-3
    """Peak learning rate when the user gives none."""

    def prepare(self, model: nn.Module) -> None:
        """Freeze parts or inject adapters, before the optimizer is built."""

    def param_groups(self, model: nn.Module, lr: float) -> list[dict]:
        """What the optimizer sees, and at which rate."""
        return [{"params": trainable_parameters(model), "lr": lr}]

    def on_epoch_start(self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        """Schedules; derive state from `epoch` alone so that a resumed run does the same."""

    def finalize(self, model: nn.Module) -> None:
        """Make the model plain for export (merge adapters)."""


def get_strategy(name: str, **knobs) -> Strategy:
    from tunewise.strategies import full, linear_probe, scratch  # noqa: F401

    return STRATEGIES.get(name)(**knobs)
