"""Text classification (sentiment, topic, pairs such as entailment): a linear head on the
encoder's pooled output, as transformers' BERT sequence classifier has; accuracy, macro-F1."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from tunewise.backbones import Backbone
from tunewise.backbones.hf import Tokenize
from tunewise.config import TrainConfig
from tunewise.data.text import TextSet
from tunewise.tasks import TASKS, TaskModel
from tunewise.tasks.image_classification import ImageClassification
from tunewise.tasks.text_batches import Encoded, encoded_once, text_loader


def encode_texts(data: TextSet, preprocess: Tokenize) -> Encoded:
    """Tokenize every text (pair) once, truncated to `preprocess.max_length`."""

    def encode() -> dict[str, list]:
        return dict(preprocess.tokenizer(data.texts, data.pairs, truncation=True, max_length=preprocess.max_length))

    columns = encoded_once((preprocess.name, preprocess.max_length, data.fingerprint()), encode)
    return Encoded(columns, list(data.labels))


@TASKS.register("text_classification")
class TextClassification:
    name = "text_classification"
    metric = "accuracy"
    greater_is_better = True
    cacheable = True

    def build_model(self, backbone: Backbone, classes: list[str]) -> TaskModel:
        return TaskModel(backbone.model, nn.Linear(backbone.num_features, len(classes)), backbone.layer_groups)

    def loader(self, data: TextSet, preprocess: Tokenize, train: TrainConfig, training: bool) -> DataLoader:
        return text_loader(encode_texts(data, preprocess), preprocess.tokenizer, train, training)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Shape: outputs (B, C) logits, targets (B,) class indices -> scalar."""
        return F.cross_entropy(outputs, targets)

    metrics = ImageClassification.metrics
