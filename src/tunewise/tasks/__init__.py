"""Tasks, registered by name: each turns a backbone into a task model and scores its outputs."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from tunewise.backbones import Backbone
from tunewise.registry import Registry


class TaskModel(nn.Module):
    """A backbone with a task head: `forward(x) = head(backbone(x))`.

    Strategies address `.backbone` and `.head`; feature caching trains `.head` alone.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, layer_groups: list[list[str]]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.layer_groups = layer_groups
        """Parameter names of `backbone`, grouped from input to output (Backbone.layer_groups)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class Task(Protocol):
    """What `fit()` needs of a task."""

    name: str
    metric: str
    """The validation metric that selects the best epoch (and, later, the best run)."""
    greater_is_better: bool

    def build_model(self, backbone: Backbone, num_classes: int) -> TaskModel: ...

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor: ...

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict: ...


TASKS: Registry = Registry("task")


def get_task(name: str) -> Task:
    from tunewise.tasks import image_classification  # noqa: F401

    return TASKS.get(name)()
