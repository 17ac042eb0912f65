"""Object detection: torchvision's Faster R-CNN (or FCOS) with a feature pyramid on any multi-scale
backbone; COCO mAP@[.5:.95] and mAP@.5 through torchmetrics (pycocotools underneath).

The pretrained backbone is `.backbone` (its layer groups intact), and the neck, RPN and box
heads are `.head`: so linear_probe trains neck and heads on a frozen backbone, partial and llrd
reach into the backbone's last stages, as for classification. BatchNorm in a pretrained
backbone is frozen (see multiscale.py).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from tunewise.backbones import Backbone, Preprocess
from tunewise.backbones.multiscale import Pyramid, pyramid
from tunewise.config import DataConfig, TrainConfig
from tunewise.data.base import DataSplits
from tunewise.data.dense import DetectionSet
from tunewise.epochs import image_loader
from tunewise.tasks import TASKS, Task, TaskModel

LEVELS = 3  # backbone maps at strides 8, 16 and 32 (plus the pyramid's max-pooled level at 64)
FPN_CHANNELS = 128
BOX_HEAD_WIDTH = 256  # torchvision's 1024 is sized for COCO's 80 classes: 2.3M head parameters instead of 8.1M


class Neck(nn.Module):
    """What torchvision's detector calls its backbone: the Pyramid's maps through an FPN.

    The Pyramid is held by reference, not registered: it belongs to DetectionModel.backbone, so
    that every parameter has a single name and strategies see backbone and head apart.
    """

    def __init__(self, body: Pyramid, out_channels: int = FPN_CHANNELS) -> None:
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        super().__init__()
        self._body = [body]
        self.fpn = FeaturePyramidNetwork(body.channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, images: torch.Tensor) -> OrderedDict:
        maps = self._body[0](images)
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))


class DetectionModel(TaskModel):
    """`model({"images": [...], "targets": [...]})`: in training, torchvision's loss dict; in
    eval, one dict per image of boxes (x1 y1 x2 y2, input pixels), labels (1..C) and scores.
    The backbone is the Pyramid, the head the detector."""

    def forward(self, inputs: dict):
        # fp32 under mixed precision too: torchvision builds anchors and decodes boxes in the maps' dtype,
        # and bf16 would round box corners to whole pixels and worse
        with torch.autocast(inputs["images"][0].device.type, enabled=False):
            if self.training:
                return self.head(inputs["images"], inputs["targets"])
            found = self.head(inputs["images"])
        return [{k: v[d["labels"] > 0] for k, v in d.items()} for d in found]  # 0 is the background


def faster_rcnn(body: Pyramid, num_classes: int, preprocess: Preprocess) -> nn.Module:
    """Faster R-CNN + FPN sized for `preprocess.input_size`: anchors from 1/8 of it up, and
    proposal counts for small images (torchvision's defaults are for 800-pixel COCO images)."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    neck = Neck(body)
    smallest = max(8, preprocess.input_size // 8)
    levels = len(body.channels) + 1
    anchors = AnchorGenerator(tuple((smallest * 2**i,) for i in range(levels)), ((0.5, 1.0, 2.0),) * levels)
    return FasterRCNN(
        neck,  # the box predictor has num_classes + 1 outputs: 0 is the background
        min_size=preprocess.input_size, max_size=preprocess.input_size,
        image_mean=list(preprocess.mean), image_std=list(preprocess.std),
        rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign([str(i) for i in range(len(body.channels))], 7, 2),
        box_head=TwoMLPHead(FPN_CHANNELS * 7 * 7, BOX_HEAD_WIDTH),
        box_predictor=FastRCNNPredictor(BOX_HEAD_WIDTH, num_classes + 1),
        rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=150,
        box_batch_size_per_image=128, box_detections_per_img=50,
    )


def fcos(body: Pyramid, num_classes: int, preprocess: Preprocess) -> nn.Module:
    """FCOS (Tian et al. 2019, https://arxiv.org/abs/1904.01355): one-stage and anchor-free; its
    "anchors" are the pyramid's points, one per location, sized by their level's stride."""
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    strides = [*body.strides, 2 * body.strides[-1]]  # the max-pooled level doubles the last stride
    return FCOS(Neck(body), num_classes=num_classes + 1, min_size=preprocess.input_size,
                max_size=preprocess.input_size, image_mean=list(preprocess.mean), image_std=list(preprocess.std),
                anchor_generator=AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides)),
                detections_per_img=50, topk_candidates=300)


DETECTORS = {"faster_rcnn": faster_rcnn, "fcos": fcos}


@dataclass(frozen=True)
class Knobs:
    """Object detection's knobs: `get_task("object_detection", detector="fcos")`, or `--detector fcos`
    (the command line makes its flags from this class)."""

    detector: Literal["faster_rcnn", "fcos"] = "faster_rcnn"
    """Object detection: Faster R-CNN (two-stage) or FCOS (one-stage, anchor-free), both torchvision's."""


@TASKS.add
class ObjectDetection(Task):
    name = "object_detection"
    dense = True
    outputs = "boxes"
    rankable = False
    data_kind = DetectionSet
    reads = "images with boxes"
    path_help = "a COCO JSON file, a folder of COCO split files, or a Pascal VOC folder"
    augments = True
    """Training batches are augmented (crops, flips) unless --no-augment; the search checks both."""
    metric = "map"
    cacheable = False
    knob_type = Knobs

    def __init__(self, detector: str = Knobs.detector) -> None:
        self.detector = detector
        """A key of DETECTORS: the task is made with it (--detector), load_model makes it with model.json's."""

    def read_path(self, path: Path, config: DataConfig) -> DataSplits:
        from tunewise.data.dense_files import read_detection_data

        return read_detection_data(path, config)

    def build_model(self, backbone: Backbone, classes: list[str]) -> DetectionModel:
        body, groups = pyramid(backbone, LEVELS)
        preprocess = cast(Preprocess, backbone.preprocess)  # an image backbone's (check_backbone_fits)
        return DetectionModel(body, DETECTORS[self.detector](body, len(classes), preprocess), groups)

    def loader(self, data: DetectionSet, preprocess: Preprocess, train: TrainConfig, training: bool) -> DataLoader:
        """Batches of ({"images": list of (3, H, W) in [0, 1], "targets": list}, targets); the
        detector resizes and normalises itself, so boxes stay in each image's own pixels."""
        to_size = v2.Resize(size=None, max_size=preprocess.input_size, antialias=True)  # no 12-MP floats in a batch
        steps = [v2.ToImage(), to_size, v2.ToDtype(torch.float32, scale=True)]
        if training and train.augment:
            steps = [v2.ToImage(), to_size, v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True),
                     v2.SanitizeBoundingBoxes()]
        return image_loader(data.with_transform(v2.Compose(steps)), train, training, collate_fn=collate)

    def loss(self, outputs: dict[str, torch.Tensor], targets) -> torch.Tensor:
        """Shape: outputs the detector's losses (RPN objectness and boxes, classifier, box regression)."""
        return cast(torch.Tensor, sum(outputs.values()))  # never empty: not sum()'s 0

    metrics_names = ("map", "map_50", "map_75", "mar_100")
    # no example_stats: COCO mAP is not a sum over images, so a search's intervals on detection
    # carry the seeds' variation alone (said in the report)

    def metrics(self, outputs: list[list[dict]], targets: list[list[dict]], data=None) -> dict:
        """COCO mAP@[.5:.95] (`map`), mAP@.5, mAP@.75 and mean recall at 100 detections."""
        from torchmetrics.detection import MeanAveragePrecision

        meter = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
        for predicted, true in zip(outputs, targets, strict=True):
            meter.update(predicted, true)
        result = meter.compute()
        return {"map": _score(result["map"]), "map_50": _score(result["map_50"]),
                "map_75": _score(result["map_75"]), "mar_100": _score(result["mar_100"]),
                "images": sum(len(t) for t in targets), "boxes": sum(len(x["boxes"]) for t in targets for x in t)}


def collate(batch: list) -> tuple[dict, list[dict]]:
    """Images of any size as a list; class indices shifted by one, 0 being the background."""
    images = [image for image, _ in batch]
    targets = [{"boxes": target["boxes"].as_subclass(torch.Tensor), "labels": target["labels"] + 1}
               for _, target in batch]
    return {"images": images, "targets": targets}, targets


def _score(value: torch.Tensor) -> float:
    """torchmetrics reports -1 where nothing could be scored (no boxes at all): 0 for ranking."""
    return max(0.0, float(value))
