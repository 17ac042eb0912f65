"""Image classification: a linear head on pooled features; accuracy, macro-F1, confusion matrix."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from tunewise.backbones import Backbone, Preprocess
from tunewise.config import TrainConfig
from tunewise.data import ImageSet
from tunewise.tasks import TASKS, TaskModel


class Classification:
    """One class per example from pooled features: what image and text classification share."""

    metric = "accuracy"
    greater_is_better = True
    cacheable = True

    def build_model(self, backbone: Backbone, classes: list[str]) -> TaskModel:
        return TaskModel(backbone.model, nn.Linear(backbone.num_features, len(classes)), backbone.layer_groups)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Shape: outputs (B, C) logits, targets (B,) class indices -> scalar."""
        return F.cross_entropy(outputs, targets)

    def metrics(self, outputs: list[torch.Tensor], targets: list[torch.Tensor], data=None) -> dict:
        """Accuracy, macro-F1, the confusion matrix (rows: true class, columns: predicted) and loss."""
        logits, true = torch.cat(outputs).float(), torch.cat(targets)
        return classification_metrics(logits.argmax(1).numpy(), true.numpy(), logits.shape[1]) | {
            "loss": float(F.cross_entropy(logits, true))
        }


def classification_metrics(predicted: np.ndarray, true: np.ndarray, num_classes: int) -> dict:
    """Shape: predicted (N,), true (N,) class indices.

    Macro-F1 averages the per-class F1 over classes present in `true` or `predicted`
    (a class absent from both is skipped, as scikit-learn does with its labels).
    """
    confusion = np.bincount(true * num_classes + predicted, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )
    tp = np.diag(confusion).astype(float)
    support, claimed = confusion.sum(1), confusion.sum(0)
    present = (support + claimed) > 0
    f1 = np.divide(2 * tp, support + claimed, out=np.zeros_like(tp), where=present)
    return {
        "accuracy": float(tp.sum() / max(1, len(true))),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "confusion_matrix": confusion.tolist(),
    }


@TASKS.register("image_classification")
class ImageClassification(Classification):
    name = "image_classification"

    def loader(self, data: ImageSet, preprocess: Preprocess, train: TrainConfig, training: bool) -> DataLoader:
        transform = preprocess.train_transform() if training and train.augment else preprocess.eval_transform()
        return DataLoader(data.with_transform(transform), batch_size=train.batch_size, shuffle=training,
                          num_workers=train.num_workers, persistent_workers=train.num_workers > 0,
                          pin_memory=torch.cuda.is_available())
