"""Putting a backbone and a task together: shared by fit, rank and evaluate, below all of them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunewise.backbones.hf import Tokenize
from tunewise.config import DataConfig
from tunewise.errors import TunewiseError

if TYPE_CHECKING:
    from tunewise.backbones import Backbone, Preprocess
    from tunewise.tasks import Task


def check_backbone_fits(backbone: Backbone, task: Task, model: str) -> None:
    """A text task needs a tokenizer's model and an image task an image model."""
    reads_text = isinstance(backbone.preprocess, Tokenize)
    if reads_text != (task.modality == "text"):
        kind, example = ("a text", "pkg:minilm or hf:bert-base-uncased") if not reads_text else \
            ("an image", "pkg:efficientnet_lite0 or timm:resnet50")
        raise TunewiseError(f"--task {task.name} needs {kind} model, and {model!r} is not one. Pass a model such as "
                            f"{example}.")


def configured_preprocess(preprocess: Preprocess | Tokenize, data: DataConfig, task: Task) -> Preprocess | Tokenize:
    """The backbone's preprocessing at the size (images) or length (text) the data settings ask."""
    if isinstance(preprocess, Tokenize):
        default = task.max_length or preprocess.max_length
        return preprocess.configured(data.max_length or default, data.doc_stride, asked=data.max_length is not None)
    return preprocess.at_size(data.image_size) if data.image_size else preprocess
