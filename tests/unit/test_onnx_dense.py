"""ONNX exports of segmentation and detection models: the torch-free decoders against torch's own
operations, the parity gates, and the exports' rows against `tunewise predict`'s on image files."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F
from torchvision.transforms import v2

from tunewise.ship import dense_decode
from tunewise.ship.dense_decode import (
    MaskRunner,
    detection_row,
    mask_from_logits,
    resize_bilinear,
    segmentation_input,
    segmentation_row,
)

SIZE, CLASSES = 32, ["background", "red", "blue"]
SHAPES = [(32, 32), (20, 45), (71, 50), (90, 128)]  # (height, width): equal, smaller, larger than SIZE


def images(seed: int = 0) -> list[Image.Image]:
    """Grey noise with coloured squares, at SHAPES."""
    rng = np.random.default_rng(seed)
    found = []
    for height, width in SHAPES:
        pixels = rng.integers(90, 130, (height, width, 3)).astype(np.uint8)
        for color in ((220, 30, 30), (30, 30, 220)):
            side = int(rng.integers(6, min(height, width) // 2))
            y, x = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
            pixels[y:y + side, x:x + side] = color
        found.append(Image.fromarray(pixels))
    return found


def write_images(folder, pictures):
    folder.mkdir()
    files = []
    for i, picture in enumerate(pictures):
        picture.save(folder / f"{i}.png")
        files.append(folder / f"{i}.png")
    return files


def tiny_model_folder(folder, task_name: str, detector: str | None = None):
    """A random timm test_resnet model at SIZE, written as fit writes it (export_dense)."""
    from tunewise.backbones import load_backbone
    from tunewise.export import export_dense
    from tunewise.tasks import get_task

    torch.manual_seed(0)
    backbone = load_backbone("timm:test_resnet", pretrained=False)
    backbone = replace(backbone, preprocess=backbone.preprocess.at_size(SIZE))
    task = get_task(task_name, **({"detector": detector} if detector else {}))
    model = task.build_model(backbone, CLASSES)
    with torch.no_grad():
        if detector is not None:
            make_confident(model.head)
    folder.mkdir()
    export_dense(model, backbone, backbone.preprocess, task, CLASSES, folder)
    return folder


def make_confident(detector) -> None:
    """Random heads score every box alike, and low: spread the class scores (equal scores would
    leave the order of boxes to chance) and raise two classes' so that boxes pass MIN_SCORE."""
    if hasattr(detector, "roi_heads"):  # Faster R-CNN: softmax over background + classes
        classifier = detector.roi_heads.box_predictor.cls_score
        boost = torch.tensor([2.0, 1.5])
    else:  # FCOS: a sigmoid per class
        classifier = detector.head.classification_head.cls_logits
        boost = torch.tensor([5.0, 4.5])
    classifier.weight.mul_(100)
    classifier.bias[1:3] += boost


# --- the decoders against torch's operations (no export) -------------------------------------------

@pytest.mark.parametrize(("height", "width"), SHAPES)
def test_segmentation_input_is_dense_predicts_resize_and_normalize(height, width):
    picture = images()[SHAPES.index((height, width))]
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    tensor = v2.functional.to_dtype(v2.functional.to_image(picture), torch.float32, scale=True)
    expected = v2.functional.normalize(v2.functional.resize(tensor, [SIZE, SIZE], antialias=True), mean, std)
    ours = segmentation_input(picture, SIZE, list(mean), list(std))
    assert ours.shape == (3, SIZE, SIZE) and ours.dtype == np.float32
    assert np.abs(ours - expected.numpy()).max() < 1e-5


@pytest.mark.parametrize(("side", "height", "width"), [*((SIZE, h, w) for h, w in SHAPES), (7, 3, 100),
                                                     (128, 500, 375), (128, 1000, 700)])
def test_resize_bilinear_is_torchs_interpolate(side, height, width):
    logits = np.random.default_rng(0).standard_normal((3, side, side)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(logits)[None], size=(height, width), mode="bilinear",
                             align_corners=False)[0].numpy()
    assert np.abs(resize_bilinear(logits, height, width) - expected).max() < 1e-6  # float32 steps of values ~4
    assert np.array_equal(mask_from_logits(logits, height, width), expected.argmax(0))


def test_segmentation_row_holds_the_mask_as_a_palette_png_and_the_class_shares():
    mask = np.zeros((4, 5), np.int64)
    mask[:2, :] = 2
    mask[2, :2] = 2
    row = segmentation_row(mask, CLASSES)
    assert row["classes"] == {"background": 0.4, "blue": 0.6}
    png = Image.open(io.BytesIO(base64.b64decode(row["mask_png"])))
    assert png.mode == "P" and np.array_equal(np.asarray(png), mask)


def test_detection_row_keeps_confident_foreground_boxes_in_order():
    boxes = np.array([[1.04, 2, 3, 4], [5, 6, 7, 8], [0, 0, 1, 1]], np.float32)
    row = detection_row(boxes, np.array([2, 0, 1]), np.array([0.9, 0.8, 0.1], np.float32), CLASSES)
    assert row == {"objects": [{"label": "red", "score": 0.9, "box": [1.0, 2.0, 3.0, 4.0]}]}


def test_the_decoders_import_no_torch():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(dense_decode))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
                for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
    assert not imported & {"torch", "torchvision", "timm", "transformers"}, imported


# --- exports: parity and the rows against `tunewise predict` -----------------------------------------

@torch.no_grad()
def test_masks_decoded_with_numpy_are_predicts_masks(tmp_path):
    """The runner's numpy preprocessing and mask decoding around the torch model itself give
    `tunewise predict`'s masks, pixel for pixel (the export's parity is checked on its own)."""
    from tunewise.export import load_model
    from tunewise.inference import predict
    from tunewise.ship.onnx_dense import masks_preprocessing

    folder = tiny_model_folder(tmp_path / "model", "semantic_segmentation")
    files = write_images(tmp_path / "in", images(1))
    expected = predict(folder, files, out=tmp_path / "out")
    model, info = load_model(folder)
    runner = MaskRunner(folder, {"preprocessing": masks_preprocessing(info), "classes": CLASSES})
    pictures = [Image.open(f).convert("RGB") for f in files]
    feeds, sizes = runner.feeds(pictures)
    rows = runner.rows([model(torch.from_numpy(feeds["images"])).numpy()], sizes)
    assert_same_masks(rows, expected, tmp_path / "out", pictures)


def assert_same_masks(rows, expected, out, pictures):
    for index, (row, torch_row) in enumerate(zip(rows, expected, strict=True)):
        ours = np.asarray(Image.open(io.BytesIO(base64.b64decode(row["mask_png"]))))
        theirs = np.asarray(Image.open(out / "masks" / f"{index:04d}-{index}.png"))
        assert ours.shape == (pictures[index].height, pictures[index].width)
        assert np.array_equal(ours, theirs), f"image {index}: {(ours != theirs).mean():.2%} of pixels differ"
        assert row["classes"] == torch_row["classes"]


@pytest.fixture(scope="module")
def segmentation_export(tmp_path_factory):
    from tunewise.ship.onnx_export import export_onnx

    folder = tiny_model_folder(tmp_path_factory.mktemp("seg") / "model", "semantic_segmentation")
    return folder, export_onnx(folder)


@pytest.mark.slow  # the dynamo exporter: about 30 s on 2 loaded cores
def test_segmentation_export_passes_its_gate_and_gives_predicts_masks(segmentation_export, tmp_path):
    from tunewise.inference import predict
    from tunewise.ship.onnx_model import OnnxModel

    folder, meta = segmentation_export
    assert meta["task_outputs"] == "masks" and meta["exporter"] == "dynamo"
    assert meta["parity"]["max_abs_diff"] < 1e-4 and meta["parity"]["batch_sizes"] == [1, 3]
    files = write_images(tmp_path / "in", images(1))
    expected = predict(folder, files, out=tmp_path / "out")
    pictures = [Image.open(f).convert("RGB") for f in files]
    rows = OnnxModel(folder / "onnx").predict(pictures)
    assert_same_masks(rows, expected, tmp_path / "out", pictures)


@pytest.fixture(scope="module", params=["faster_rcnn", "fcos"])
def detection_export(request, tmp_path_factory):
    """Exported as a user exports it: `tunewise export FOLDER --format onnx` (it prints the gate's figures)."""
    from tunewise import cli

    folder = tiny_model_folder(tmp_path_factory.mktemp(request.param) / "model", "object_detection", request.param)
    assert cli.main(["export", str(folder), "--format", "onnx"]) == 0
    return folder, json.loads((folder / "onnx" / "onnx.json").read_text())


def test_detection_export_passes_its_gate_and_gives_predicts_boxes(detection_export, tmp_path):
    from tunewise.inference import predict
    from tunewise.ship.onnx_model import OnnxModel

    folder, meta = detection_export
    parity = meta["parity"]
    assert meta["task_outputs"] == "boxes" and meta["exporter"] == "torchscript"
    assert "mismatch" not in parity and parity["boxes_compared"] > 0, parity
    assert parity["max_abs_diff"] < 1e-4 and parity["box_max_abs_diff"] < 1e-3
    files = write_images(tmp_path / "in", images(3))
    expected = predict(folder, files)
    rows = OnnxModel(folder / "onnx").predict([Image.open(f).convert("RGB") for f in files])
    assert sum(len(r["objects"]) for r in rows) > 0
    for row, torch_row in zip(rows, expected, strict=True):
        assert [b["label"] for b in row["objects"]] == [b["label"] for b in torch_row["objects"]]
        for ours, theirs in zip(row["objects"], torch_row["objects"], strict=True):
            assert abs(ours["score"] - theirs["score"]) <= 1e-4 + 1e-9  # both rounded to 4 places
            assert np.abs(np.subtract(ours["box"], theirs["box"])).max() <= 0.1 + 1e-6  # rounded to 0.1 px


def test_the_detection_gate_refuses_other_counts_labels_or_boxes(detection_export):
    from tunewise.errors import TunewiseError
    from tunewise.ship.onnx_dense import check_boxes

    _, meta = detection_export
    check_boxes(meta["parity"], "fcos")
    for worse in ({"box_max_abs_diff": 0.002}, {"max_abs_diff": 2e-4}, {"mismatch": "on probe image 0 the graph ..."}):
        with pytest.raises(TunewiseError, match="does not give the torch model's boxes.*nothing was written"):
            check_boxes(meta["parity"] | worse, "fcos")


def test_boxes_are_matched_to_the_nearest_of_their_label_whatever_their_order():
    from tunewise.ship.onnx_dense import match_boxes

    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 4, 4]], np.float32)
    ours = (boxes, np.array([1, 1, 2]), np.array([0.5, 0.5, 0.4], np.float32))
    swapped = (boxes[[1, 0, 2]] + 1e-4, ours[1], ours[2] + 1e-6)
    box, score = match_boxes(ours, swapped)
    assert box == pytest.approx(1e-4, abs=1e-6) and score == pytest.approx(1e-6, abs=1e-7)
    relabelled = (boxes, np.array([1, 2, 2]), ours[2])
    assert match_boxes(ours, relabelled)[0] == 16  # a box whose label moved is far from all of its new label
    assert match_boxes(ours, (boxes[:0], ours[1][:0], ours[2][:0]))[0] == float("inf")


def test_a_detection_export_is_served_with_torch_unimportable(detection_export, tmp_path):
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    from tunewise.ship import onnx_model

    folder, _ = detection_export
    picture = write_images(tmp_path / "in", images(3)[:1])[0]
    code = textwrap.dedent(f"""
        import json, sys
        sys.modules["torch"] = None  # as a slim install: any import of torch fails
        from PIL import Image
        from tunewise.ship.onnx_model import OnnxModel
        print(json.dumps(OnnxModel({str(folder / "onnx")!r}).predict([Image.open({str(picture)!r}).convert("RGB")])))
        heavy = [m for m in ("torch", "torchvision", "timm", "transformers") if sys.modules.get(m) is not None]
        assert not heavy, heavy
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(Path(onnx_model.__file__).parents[2]), "PATH": "/usr/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)
    assert len(rows) == 1 and rows[0]["objects"], rows


def test_the_detection_graph_sizes_images_as_the_eager_detector(tmp_path):
    """At 128, torchvision's traced resize makes a side of 141 into 127 (its scale in float32),
    where the eager detector makes 128; and a side of 49 into 128, where eager makes 127 (49 * (128 /
    49) is 127.999... in float64). The export's resize gives eager's size, and its pixels, on both."""
    import onnxruntime as ort
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    from tunewise.ship.onnx_dense import eager_resize, quiet

    transform = GeneralizedRCNNTransform(128, 128, [0.5] * 3, [0.25] * 3).eval()

    class Resize(torch.nn.Module):
        def forward(self, image):
            return transform.resize(image, None)[0]

    path = tmp_path / "resize.onnx"
    with quiet(), eager_resize():
        torch.onnx.export(Resize(), (torch.rand(3, 60, 60),), str(path), dynamo=False, opset_version=17,
                          input_names=["image"], dynamic_axes={"image": {1: "height", 2: "width"}})
    session = ort.InferenceSession(str(path))
    for height, width in ((71, 141), (40, 49), (49, 30), (128, 128)):
        image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(height))
        eager = transform.resize(image, None)[0].numpy()
        graph = session.run(None, {"image": image.numpy()})[0]
        assert graph.shape == eager.shape, (height, width)
        assert np.abs(graph - eager).max() < 1e-5
