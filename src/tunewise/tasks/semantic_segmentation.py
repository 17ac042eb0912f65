"""Semantic segmentation: a semantic-FPN decoder (Kirillov et al. 2019, "Panoptic Feature Pyramid
Networks", https://arxiv.org/abs/1901.02446) on the backbone's multi-scale maps; mean IoU and
pixel accuracy, with IGNORE_INDEX pixels counted nowhere.

As in detection, the pretrained backbone is `.backbone` and the decoder `.head`; BatchNorm in
a pretrained backbone is frozen (see multiscale.py).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from tunewise.backbones import Backbone, Preprocess
from tunewise.backbones.multiscale import pyramid
from tunewise.config import DataConfig, TrainConfig
from tunewise.data.base import DataSplits
from tunewise.data.dense import IGNORE_INDEX, SegmentationSet
from tunewise.epochs import image_loader
from tunewise.tasks import TASKS, Task, TaskModel

LEVELS = 4  # strides 4 to 32
DECODER_CHANNELS = 64


class SemanticFPN(nn.Module):
    """maps (finest first) -> class logits at the finest map's resolution.

    An FPN (torchvision's), then each level through a 3x3 conv + GroupNorm + ReLU, upsampled
    to the finest level and summed, then a 1x1 conv to the classes.
    """

    def __init__(self, channels: list[int], num_classes: int, width: int = DECODER_CHANNELS) -> None:
        from torchvision.ops import Conv2dNormActivation
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork

        super().__init__()
        self.fpn = FeaturePyramidNetwork(channels, width)
        norm = lambda c: nn.GroupNorm(8, c)  # noqa: E731
        self.levels = nn.ModuleList(Conv2dNormActivation(width, width, 3, norm_layer=norm) for _ in channels)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        pyramid_maps = self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps))).values()
        size = maps[0].shape[-2:]
        merged = sum(F.interpolate(conv(m), size=size, mode="bilinear", align_corners=False)
                     for conv, m in zip(self.levels, pyramid_maps, strict=True))
        return self.classifier(merged)


class SegmentationModel(TaskModel):
    """images (B, 3, H, W) -> logits (B, C, H, W), upsampled from the decoder's 1/4 resolution."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.backbone(images))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


@TASKS.add
class SemanticSegmentation(Task):
    name = "semantic_segmentation"
    dense = True
    outputs = "masks"
    rankable = False
    data_kind = SegmentationSet
    reads = "images with masks"
    path_help = "a folder of images/ and masks/ (or train/ val/ [test/] of those, or VOC's layout)"

    def read_path(self, path: Path, config: DataConfig) -> DataSplits:
        from tunewise.data.dense_files import read_segmentation_data

        return read_segmentation_data(path, config)
    augments = True
    """Training batches are augmented (crops, flips) unless --no-augment; the search checks both."""
    metric = "miou"
    cacheable = False

    def build_model(self, backbone: Backbone, classes: list[str]) -> SegmentationModel:
        body, groups = pyramid(backbone, LEVELS)
        return SegmentationModel(body, SemanticFPN(body.channels, len(classes)), groups)

    def loader(self, data: SegmentationSet, preprocess: Preprocess, train: TrainConfig,
               training: bool) -> DataLoader:
        """Batches of images (B, 3, S, S) and masks (B, S, S), S the input size; masks are
        resized with nearest-neighbour, so they keep class indices."""
        size = (preprocess.input_size, preprocess.input_size)
        if training and train.augment:
            geometry = [v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True), v2.RandomHorizontalFlip()]
        else:
            geometry = [v2.Resize(size, antialias=True)]
        transform = v2.Compose([v2.RGB(), *geometry, v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                                v2.Normalize(preprocess.mean, preprocess.std)])
        return image_loader(data.with_transform(transform), train, training, collate_fn=collate,
                            pin_memory=torch.cuda.is_available())

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Shape: outputs (B, C, H, W) logits, targets (B, H, W) class indices -> scalar."""
        return F.cross_entropy(outputs, targets, ignore_index=IGNORE_INDEX)

    def compact(self, outputs: torch.Tensor) -> torch.Tensor:
        """Per-batch outputs kept for `metrics`: the predicted classes (B, H, W), not the logits."""
        return outputs.argmax(1).to(torch.uint8)

    metrics_names = ("miou", "pixel_accuracy")

    def example_stats(self, outputs: list[torch.Tensor], targets: list[torch.Tensor],
                      data: SegmentationSet) -> np.ndarray:
        """Per image and class: pixels right, predicted, true (ignored pixels left out).

        Shape: -> (N, 3C); summed over any set of images they give that set's IoUs.
        """
        classes = len(data.classes)
        rows = []
        for predicted, true in zip(outputs, targets, strict=True):
            for p, t in zip(predicted.long(), true.long(), strict=True):
                keep = t != IGNORE_INDEX
                p, t = p[keep].numpy(), t[keep].numpy()
                rows.append(np.concatenate([np.bincount(t[p == t], minlength=classes),
                                            np.bincount(p, minlength=classes), np.bincount(t, minlength=classes)]))
        return np.array(rows, dtype=np.int64).reshape(-1, 3 * classes)

    def metric_from_stats(self, stats: np.ndarray, metric: str) -> float:
        tp, predicted, true = np.split(stats.sum(0).astype(float), 3)
        if metric == "pixel_accuracy":
            return float(tp.sum() / max(1.0, true.sum()))
        union = predicted + true - tp
        return float((tp[union > 0] / union[union > 0]).mean()) if (union > 0).any() else 0.0

    def metrics(self, outputs: list[torch.Tensor], targets: list[torch.Tensor], data: SegmentationSet) -> dict:
        """Mean IoU over the classes present in the truth or the predictions, pixel accuracy, per-class IoU."""
        predicted = torch.cat([p.reshape(-1) for p in outputs]).long().numpy()
        true = torch.cat([t.reshape(-1) for t in targets]).long().numpy()
        return segmentation_metrics(predicted, true, len(data.classes))


def segmentation_metrics(predicted: np.ndarray, true: np.ndarray, num_classes: int) -> dict:
    """Shape: predicted (P,), true (P,) class indices per pixel; true == IGNORE_INDEX is skipped.

    IoU_c = TP_c / (TP_c + FP_c + FN_c); the mean runs over classes with a non-empty union.
    """
    keep = true != IGNORE_INDEX
    confusion = np.bincount(true[keep] * num_classes + predicted[keep],
                            minlength=num_classes**2).reshape(num_classes, num_classes)
    tp = np.diag(confusion).astype(float)
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = np.divide(tp, union, out=np.full_like(tp, np.nan), where=union > 0)
    return {"miou": float(np.nanmean(iou)) if (union > 0).any() else 0.0,
            "pixel_accuracy": float(tp.sum() / max(1, keep.sum())),
            "iou": [None if np.isnan(v) else float(v) for v in iou]}


def collate(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([image for image, _ in batch])
    masks = torch.stack([mask.as_subclass(torch.Tensor) for _, mask in batch]).long()
    return images, masks
