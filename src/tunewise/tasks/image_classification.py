"""Image classification: a linear head on pooled features; accuracy, macro-F1, confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from tunewise.backbones import Backbone, Preprocess
from tunewise.config import DataConfig, TrainConfig
from tunewise.data.base import DataSplits, ImageSet, KeptPixels
from tunewise.epochs import image_loader, loader_workers
from tunewise.tasks import TASKS, Task, TaskModel


class Classification(Task):
    """One class per example from pooled features: what image and text classification share."""

    metric = "accuracy"
    cacheable = True
    outputs = "class_scores"
    metrics_names = ("accuracy", "macro_f1", "balanced_accuracy")
    """What `--metric` may select."""
    IMBALANCE = 1.5
    """Largest-to-smallest class ratio (in training or validation) above which accuracy is no longer
    the default selection metric: a model that ignores a small class can still score well on it."""

    def choose_metric(self, splits) -> tuple[str, str]:
        """The selection metric for these data and why: macro-F1 when classes are imbalanced, else accuracy."""
        for name, part in (("training", splits.train), ("validation", splits.val)):
            counts = np.bincount(part.labels, minlength=len(splits.classes))
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() > self.IMBALANCE * counts.min():
                return "macro_f1", (f"macro-F1, because the {name} classes are imbalanced ({counts.max()} vs "
                                    f"{counts.min()} examples): accuracy would reward ignoring the small classes")
        return "accuracy", "accuracy, because the classes are balanced"

    def baseline(self, splits) -> dict:
        """The majority class of training, always predicted, scored on validation: the line to beat.
        Classes tied in training (a balanced subsample) are broken by validation frequency, so the
        line is never lower than it could be."""
        train = np.bincount(splits.train.labels, minlength=len(splits.classes))
        true = np.asarray(splits.val.labels)
        val = np.bincount(true, minlength=len(splits.classes))
        majority = int(np.argmax(np.where(train == train.max(), val, -1)))
        scores = classification_metrics(np.full_like(true, majority), true, len(splits.classes))
        return {"predicts": splits.classes[majority], **{k: scores[k] for k in self.metrics_names}}

    def example_stats(self, outputs: list[torch.Tensor], targets: list[torch.Tensor], data=None) -> np.ndarray:
        """Per validation example: (true class, predicted class), what every metric is computed from.

        Shape: -> (N, 2) integers.
        """
        predicted = torch.cat(outputs).float().argmax(1).numpy()
        return np.stack([torch.cat(targets).numpy(), predicted], axis=1)

    def metric_from_stats(self, stats: np.ndarray, metric: str) -> float:
        """`metric` of the examples in `stats` (a resample of them, in the bootstrap)."""
        return classification_metrics(stats[:, 1], stats[:, 0], int(stats.max()) + 1, detail=False)[metric]

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


def classification_metrics(predicted: np.ndarray, true: np.ndarray, num_classes: int, detail: bool = True) -> dict:
    """Shape: predicted (N,), true (N,) class indices.

    Macro-F1 averages the per-class F1 over classes present in `true` or `predicted`
    (a class absent from both is skipped, as scikit-learn does with its labels); balanced
    accuracy is the mean recall over the classes present in `true`. With `detail`, also the
    confusion matrix, per-class recall and F1, and the classes never predicted.
    """
    confusion = np.bincount(true * num_classes + predicted, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )
    tp = np.diag(confusion).astype(float)
    support, claimed = confusion.sum(1), confusion.sum(0)
    present = (support + claimed) > 0
    f1 = np.divide(2 * tp, support + claimed, out=np.zeros_like(tp), where=present)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    scores: dict[str, Any] = {
        "accuracy": float(tp.sum() / max(1, len(true))),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "balanced_accuracy": float(recall[support > 0].mean()) if (support > 0).any() else 0.0,
    }
    if detail:
        scores |= {"confusion_matrix": confusion.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
                   "never_predicted": [int(c) for c in np.flatnonzero((claimed == 0) & (support > 0))]}
    return scores


@TASKS.add
class ImageClassification(Classification):
    name = "image_classification"
    augments = True
    """Training batches are augmented (crops, flips) unless --no-augment; the search checks both."""
    data_kind = ImageSet
    reads = "images with one class each"
    path_help = ("an image folder (one subfolder per class, or train/ val/ [test/] of those), or TFRecord files of "
                 "tf.train.Example images (a .tfrecord file, or a folder of them)")

    def read_path(self, path: Path, config: DataConfig) -> DataSplits:
        from tunewise.data import image_folder, tfrecord_files

        if tfrecord_files.holds_tfrecords(path):
            return tfrecord_files.read_splits(path, config)
        return image_folder.read_splits(path, config)

    def loader(self, data: ImageSet, preprocess: Preprocess, train: TrainConfig, training: bool) -> DataLoader:
        """Augmented images when training with augmentation; otherwise, without loader processes, images
        kept decoded once read twice, the training split's from its first read when it is read again
        (KeptPixels: on bench/keras_vs_keras_fit.py, tunewise's full fine-tune went from 0.79x the speed of
        Keras's model.fit to 0.86x-1.06x over five runs, its training epochs at parity)."""
        if training and train.augment:
            shown: Dataset = data.with_transform(preprocess.train_transform())
        elif loader_workers(train) == 0 and KeptPixels.fits_in_memory(data, preprocess.input_size):
            shown = KeptPixels(data, preprocess.pixel_steps(), preprocess.scale_steps(),
                               first_read=training and train.epochs > 1)
        else:
            shown = data.with_transform(preprocess.eval_transform())
        return image_loader(shown, train, training, pin_memory=torch.cuda.is_available())
