"""`l2sp`: full fine-tuning pulled back towards the pretrained weights.

Li, Grandvalet & Davoine 2018 (https://arxiv.org/abs/1802.01483). The loss gains
alpha/2 * ||w - w0||^2 over the backbone (w0: the pretrained weights) plus beta/2 * ||head||^2;
the penalty replaces weight decay, which is off for this strategy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, cast

import torch

from tunewise.errors import ConfigError
from tunewise.strategies import STRATEGIES, Strategy
from tunewise.strategies.freezing import trainable_parameters

if TYPE_CHECKING:
    from tunewise.tasks import TaskModel


@STRATEGIES.add
@dataclass(frozen=True)
class L2SP(Strategy):
    """Args:
        alpha: strength of the pull towards the pretrained backbone weights (>= 0).
        beta: strength of plain L2 on the new head (>= 0).
    """

    alpha: float = 0.01
    beta: float = 0.01
    anchor: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    name: ClassVar[str] = "l2sp"
    default_lr: ClassVar[float] = 3e-4
    rate_range: ClassVar[tuple[float, float]] = (3e-5, 1e-3)
    grace_epochs: ClassVar[int] = 2
    knob_grid: ClassVar[tuple[dict, ...]] = ({"alpha": 0.01}, {"alpha": 0.001}, {"alpha": 0.1})
    search_order: ClassVar[int | None] = 8

    def check(self) -> None:
        if self.alpha < 0 or self.beta < 0:
            raise ConfigError(f"alpha and beta must be >= 0, got alpha={self.alpha!r}, beta={self.beta!r}.")

    def prepare(self, model: TaskModel) -> None:
        self.anchor.clear()
        self.anchor.update({n: p.detach().clone() for n, p in model.backbone.named_parameters()})

    def param_groups(self, model: TaskModel, lr: float) -> list[dict]:
        return [{"params": trainable_parameters(model), "lr": lr, "weight_decay": 0.0}]

    def penalty(self, model: TaskModel) -> torch.Tensor:
        pull = sum(((p - self._anchor_for(n, p)) ** 2).sum() for n, p in model.backbone.named_parameters())
        head = sum((p**2).sum() for p in model.head.parameters())
        return cast(torch.Tensor, self.alpha / 2 * pull + self.beta / 2 * head)  # sums of tensors: not sum()'s 0

    def _anchor_for(self, name: str, p: torch.Tensor) -> torch.Tensor:
        if self.anchor[name].device != p.device:  # the model moved to the accelerator after prepare
            self.anchor[name] = self.anchor[name].to(p.device)
        return self.anchor[name]
