"""Image classification: a linear head on pooled features; accuracy, macro-F1, confusion matrix."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from tunewise.backbones import Backbone
from tunewise.tasks import TASKS, TaskModel


@TASKS.register("image_classification")
class ImageClassification:
    name = "image_classification"
    metric = "accuracy"
    greater_is_better = True

    def build_model(self, backbone: Backbone, num_classes: int) -> TaskModel:
        return TaskModel(backbone.model, nn.Linear(backbone.num_features, num_classes), backbone.layer_groups)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Shape: outputs (B, C) logits, targets (B,) class indices -> scalar."""
        return F.cross_entropy(outputs, targets)

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict:
        """Accuracy, macro-F1 and the confusion matrix (rows: true class, columns: predicted)."""
        num_classes = outputs.shape[1]
        return classification_metrics(outputs.argmax(1).numpy(), targets.numpy(), num_classes) | {
            "loss": float(F.cross_entropy(outputs.float(), targets))
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
