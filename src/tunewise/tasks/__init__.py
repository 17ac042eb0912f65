"""Tasks, registered by name: each turns a backbone into a task model and scores its outputs."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from tunewise.backbones import Backbone
from tunewise.config import TrainConfig
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

    def forward(self, x: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.backbone(x))


class Task(Protocol):
    """What `fit()` needs of a task.

    Every loader yields `(inputs, targets)`; inputs are a tensor or a dict of tensors (token
    ids), and `model(inputs)` gives the outputs that `loss` and `metrics` read.
    """

    name: str
    metric: str
    """The validation metric that selects the best epoch (and, later, the best run)."""
    greater_is_better: bool
    cacheable: bool
    """Whether a frozen backbone's outputs can be computed once and the head trained on them."""

    def build_model(self, backbone: Backbone, classes: list[str]) -> TaskModel:
        """The task model: `backbone` plus a new head for `classes` (tags for NER)."""

    def loader(self, data, preprocess, train: TrainConfig, training: bool) -> DataLoader:
        """Batches of one split: shuffled (and augmented) when `training`, in order otherwise."""

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor: ...

    def metrics(self, outputs: list[torch.Tensor], targets: list[torch.Tensor], data) -> dict:
        """The metrics of a whole split from its batches' outputs and targets, in loader order;
        `data` is the loader's dataset (QA maps windows back to its examples)."""


TASKS: Registry = Registry("task")


def get_task(name: str) -> Task:
    from tunewise.tasks import (  # noqa: F401
        image_classification,
        object_detection,
        question_answering,
        semantic_segmentation,
        text_classification,
        token_classification,
    )

    return TASKS.get(name)()
