"""Detection and segmentation metrics against known answers; pyramids of each backbone source."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tunewise.backbones import load_backbone
from tunewise.backbones.multiscale import pyramid
from tunewise.errors import BackboneError, TunewiseError
from tunewise.tasks import get_task
from tunewise.tasks.semantic_segmentation import segmentation_metrics

TRUTH = [[{"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0], [60.0, 5.0, 90.0, 40.0]]), "labels": torch.tensor([1, 2])},
          {"boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0]]), "labels": torch.tensor([2])}]]


def detections(boxes_per_image, labels_per_image):
    return [[{"boxes": b, "labels": lab, "scores": torch.linspace(0.9, 0.5, len(lab))}
             for b, lab in zip(boxes_per_image, labels_per_image, strict=True)]]


def test_map_of_perfect_predictions_is_one_and_of_none_is_zero():
    task = get_task("object_detection")
    perfect = detections([t["boxes"] for t in TRUTH[0]], [t["labels"] for t in TRUTH[0]])
    assert task.metrics(perfect, TRUTH)["map"] == pytest.approx(1.0)
    assert task.metrics(perfect, TRUTH)["map_50"] == pytest.approx(1.0)
    nothing = detections([torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.int64)] * 2)
    assert task.metrics(nothing, TRUTH)["map"] == 0.0


def test_map_counts_a_wrong_class_and_a_loose_box_as_misses():
    task = get_task("object_detection")
    wrong_class = detections([t["boxes"] for t in TRUTH[0]], [torch.tensor([2, 1]), torch.tensor([1])])
    assert task.metrics(wrong_class, TRUTH)["map"] == 0.0
    # IoU 0.62 with its box (same width, taller: 50 / 0.62 high): a hit at thresholds .5 to .6, a miss from .65
    loose = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 10.0 + 50 / 0.62]]), "labels": torch.tensor([1]),
              "scores": torch.tensor([0.9])}]
    truth = [[{"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0]]), "labels": torch.tensor([1])}]]
    scores = task.metrics([loose], truth)
    assert scores["map_50"] == pytest.approx(1.0) and scores["map_75"] == 0.0
    assert scores["map"] == pytest.approx(0.3, abs=1e-6)  # hits at .5, .55 and .6 of the 10 thresholds


def test_miou_and_pixel_accuracy_by_hand_with_ignored_pixels():
    true = np.array([0, 0, 1, 1, 2, 2, 255, 255])
    predicted = np.array([0, 1, 1, 1, 2, 0, 2, 1])
    # class 0: TP 1, FP 1 (the last 2), FN 1 -> 1/3; class 1: TP 2, FP 1, FN 0 -> 2/3; class 2: TP 1, FN 1 -> 1/2
    scores = segmentation_metrics(predicted, true, 3)
    assert scores["iou"] == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert scores["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(4 / 6)  # the two ignored pixels count nowhere


def test_miou_skips_classes_absent_from_truth_and_prediction():
    scores = segmentation_metrics(np.array([0, 0, 1]), np.array([0, 0, 1]), 4)
    assert scores["miou"] == 1.0 and scores["iou"][2:] == [None, None]


@pytest.mark.parametrize(("model", "strides"), [("timm:test_resnet", [8, 16, 32]),
                                                 ("torchvision:resnet18", [8, 16, 32]),
                                                 ("torchvision:mobilenet_v3_small", [8, 16, 32]),
                                                 ("torchvision:efficientnet_b0", [8, 16, 32])])
def test_pyramid_gives_maps_at_the_stated_strides(model, strides):
    backbone = load_backbone(model, pretrained=False)
    body, groups = pyramid(backbone, 3)
    maps = body(torch.zeros(1, 3, 64, 64))
    assert [64 // m.shape[-1] for m in maps] == strides == body.strides
    assert [m.shape[1] for m in maps] == body.channels
    names = {n for n, _ in body.named_parameters()}
    assert groups and all(n in names for group in groups for n in group)
    assert sum(len(g) for g in groups) == len(names)  # every parameter in one group, none lost


def test_a_backbone_without_a_pyramid_is_refused_clearly():
    backbone = load_backbone("timm:test_resnet", pretrained=False)
    backbone.model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    backbone.name = "custom"
    with pytest.raises(BackboneError, match="multi-scale"):
        pyramid(backbone, 3)


def test_a_vit_is_refused_for_dense_tasks_because_it_has_one_stride():
    with pytest.raises(BackboneError, match="strides"):
        pyramid(load_backbone("timm:test_vit", pretrained=False), 3)


def test_mask_values_beyond_the_classes_are_a_clear_error():
    from tunewise.data.dense import SegmentationSet
    from tunewise.errors import DataError

    mask = np.zeros((8, 8), np.uint8)
    mask[2, 2], mask[0, 0] = 5, 255  # 255 is ignored; 5 is no class of three
    data = SegmentationSet([np.zeros((8, 8, 3), np.uint8)], [mask], ["background", "a", "b"], "memory",
                           names=["scene.png"])
    with pytest.raises(DataError, match="'scene.png' holds class 5, but there are 3 classes"):
        data[0]


def test_search_over_several_models_is_refused_for_dense_tasks_before_writing(tmp_path):
    from tunewise.errors import ConfigError
    from tunewise.study import search

    with pytest.raises(ConfigError, match="ranking scores classification only"):
        search(["random:timm:test_resnet", "random:timm:resnet18"], "segmentation_demo",
               task="semantic_segmentation", out=tmp_path / "search")
    assert not (tmp_path / "search").exists()


def test_the_detector_is_a_knob_of_the_task_checked_when_it_is_made():
    assert get_task("object_detection", detector="fcos").knobs() == {"detector": "fcos"}
    assert get_task("object_detection").knobs() == {"detector": "faster_rcnn"}
    with pytest.raises(TunewiseError, match="detector must be one of faster_rcnn, fcos, got 'yolo'"):
        get_task("object_detection", detector="yolo")
    with pytest.raises(TunewiseError, match="image_classification takes no knob 'detector' \\(it has none\\)"):
        get_task("image_classification", detector="fcos")


def test_settings_written_with_the_detector_under_train_still_load():
    """Before 2026-12-02 TrainConfig held the detector: such a settings.json or best.yaml still runs,
    with the detector moved to the task's knobs."""
    from tunewise.config import run_settings

    old = {"model": "pkg:efficientnet_lite0", "strategy": "partial", "task": "object_detection",
           "data": {"data": "detection_demo"}, "train": {"epochs": 2, "detector": "fcos"}}
    settings, _, train = run_settings(old, "best.yaml")
    assert settings["task_knobs"] == {"detector": "fcos"} and train.epochs == 2
    assert not hasattr(train, "detector")
