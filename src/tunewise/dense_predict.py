"""predict() for detection and segmentation: boxes or masks for new images, written as COCO JSON
results or PNG masks, and drawn on the images (torchvision.utils does the drawing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import torch
from PIL import Image
from torch.nn import functional as F
from torchvision.transforms import v2
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from tunewise.data.dense import DetectionSet, SegmentationSet
from tunewise.data.images import open_image
from tunewise.io import write_atomic
from tunewise.ship.dense_decode import MIN_SCORE, color, palette_mask
from tunewise.tasks.object_detection import ObjectDetection


@torch.no_grad()
def predict_dense(model, info: dict, files: list[Path], out: str | Path | None = None) -> list[dict]:
    """One row per image: its detections (label, score, box x1 y1 x2 y2 in its pixels) or its
    classes' pixel shares; with `out`, the files described in `write_outputs` too."""
    results = [predict_image(model, open_image(path), info) for path in files]
    if out is not None:
        write_outputs(Path(out), files, results, info)
    return [{"path": str(path), **result_row(result, info)} for path, result in zip(files, results, strict=True)]


def predict_image(model, image: Image.Image, info: dict):
    """One RGB image's detections (dict of boxes in its own pixels, labels 1..C, scores) or class mask
    (tensor (H, W) of class indices), from a model `load_model` rebuilt."""
    device = next(model.parameters()).device
    tensor = v2.functional.to_dtype(v2.functional.to_image(image), torch.float32, scale=True)
    if detects_boxes(info):
        return {k: v.cpu() for k, v in model({"images": [tensor.to(device)]})[0].items()}
    return _segment(model, tensor, info["preprocess"], device)


def _segment(model, image: torch.Tensor, preprocess, device) -> torch.Tensor:
    """Class indices (H, W) at the image's own size: the logits are resized back before argmax."""
    size = [preprocess.input_size] * 2
    x = v2.functional.normalize(v2.functional.resize(image, size, antialias=True), preprocess.mean, preprocess.std)
    logits = model(x[None].to(device))
    return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)[0].argmax(0).cpu()


def result_row(result, info: dict) -> dict:
    """The printed row of one `predict_image` result: detections scoring MIN_SCORE or more ("objects":
    label, score, box x1 y1 x2 y2), or each present class's share of the pixels ("classes")."""
    classes = info["classes"]
    if detects_boxes(info):
        keep = result["scores"] >= MIN_SCORE
        return {"objects": [
            {"label": classes[int(c) - 1], "score": round(float(s), 4), "box": [round(float(v), 1) for v in b]}
            for b, c, s in zip(result["boxes"][keep], result["labels"][keep], result["scores"][keep], strict=True)]}
    shares = torch.bincount(result.reshape(-1), minlength=len(classes)).float() / result.numel()
    return {"classes": {c: round(float(s), 4) for c, s in zip(classes, shares, strict=True) if s}}


def write_outputs(out: Path, files: list[Path], results: list, info: dict) -> None:
    """Detection: out/predictions.json (COCO results, with the images and categories) and
    out/drawn/<name>.png; segmentation: out/masks/<name>.png (palette PNGs of class indices)
    and out/drawn/<name>.png (the mask over the image)."""
    (out / "drawn").mkdir(parents=True, exist_ok=True)
    if detects_boxes(info):
        write_atomic(out / "predictions.json", lambda tmp: Path(tmp).write_text(
            json.dumps(coco_results(files, results, info["classes"]), indent=1) + "\n"))
    else:
        (out / "masks").mkdir(exist_ok=True)
    for index, (path, result) in enumerate(zip(files, results, strict=True)):
        name = f"{index:04d}-{path.stem}.png"
        image = open_image(path)
        if detects_boxes(info):
            drawn = draw_detections(image, result, info["classes"])
        else:
            write_atomic(out / "masks" / name,
                         lambda tmp: palette_mask(result.numpy()).save(tmp, format="PNG"))  # noqa: B023 (called at once)
            drawn = draw_mask(image, result, len(info["classes"]))
        write_atomic(out / "drawn" / name, lambda tmp: drawn.save(tmp, format="PNG"))  # noqa: B023 (called at once)


def coco_results(files: list[Path], results: list[dict], classes: list[str]) -> dict:
    """COCO JSON: images, categories (ids 1..C) and one annotation per box, bbox [x, y, w, h], with score."""
    annotations: list[dict[str, Any]] = []
    for image_id, result in enumerate(results, start=1):
        for box, label, score in zip(result["boxes"].tolist(), result["labels"].tolist(), result["scores"].tolist(),
                                     strict=True):
            x1, y1, x2, y2 = box
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "score": score, "iscrowd": 0})
    images = []
    for image_id, path in enumerate(files, start=1):
        with Image.open(path) as image:
            images.append({"id": image_id, "file_name": str(path), "width": image.width, "height": image.height})
    categories = [{"id": i, "name": name} for i, name in enumerate(classes, start=1)]
    return {"images": images, "categories": categories, "annotations": annotations}


def draw_detections(image: Image.Image, result: dict, classes: list[str], min_score: float = MIN_SCORE,
                    truth: dict | None = None) -> Image.Image:
    """Boxes with label and score drawn on the image; `truth` boxes (white, unlabelled) under them."""
    canvas = v2.functional.pil_to_tensor(image)
    if truth is not None and len(truth["boxes"]):
        canvas = draw_bounding_boxes(canvas, truth["boxes"], colors="white", width=1)
    keep = result["scores"] >= min_score
    if keep.any():
        labels = [f"{classes[int(c) - 1]} {float(s):.2f}" for c, s in zip(result["labels"][keep],
                                                                             result["scores"][keep], strict=True)]
        colors = [color(int(c)) for c in result["labels"][keep]]
        canvas = draw_bounding_boxes(canvas, result["boxes"][keep], labels=labels, colors=colors, width=2)
    return v2.functional.to_pil_image(canvas)


def draw_mask(image: Image.Image, mask: torch.Tensor, num_classes: int) -> Image.Image:
    """Every class but the first (background) as a translucent colour over the image."""
    canvas = v2.functional.pil_to_tensor(image)
    masks = torch.stack([mask == c for c in range(1, num_classes)]) if num_classes > 1 else None
    if masks is not None and masks.any():
        canvas = draw_segmentation_masks(canvas, masks, alpha=0.5, colors=[color(c) for c in range(1, num_classes)])
    return v2.functional.to_pil_image(canvas)


@torch.no_grad()
def draw_examples(model_dir: Path, data, out: Path, count: int = 8) -> Path:
    """A grid of `count` held-out images (test, else val) with the model's boxes or mask drawn,
    beside the truth (detection: white boxes under the predictions; segmentation: the true mask)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from tunewise.data import load_data
    from tunewise.export import load_model

    model, info = load_model(model_dir)
    splits = load_data(data, info["task"])
    held_out = cast(DetectionSet | SegmentationSet, splits.test if splits.test is not None else splits.val)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    shown = held_out.subset(range(min(count, len(held_out)))).with_transform(None)
    detection = detects_boxes(info)
    rows = 1 if detection else 2
    figure, axes = plt.subplots(rows, len(shown), figsize=(2.2 * len(shown), 2.4 * rows), squeeze=False)
    for column in range(len(shown)):
        image, truth = shown[column]
        predicted = predict_image(model, image, info)
        if detection:
            panels = [draw_detections(image, predicted, info["classes"], truth={"boxes": truth["boxes"]})]
        else:
            classes = len(info["classes"])
            panels = [draw_mask(image, predicted, classes), draw_mask(image, truth.as_subclass(torch.Tensor), classes)]
        for row, panel in enumerate(panels):
            axes[row][column].imshow(panel)
            axes[row][column].axis("off")
    if not detection:
        axes[0][0].set_title("predicted", fontsize=8, loc="left")
        axes[1][0].set_title("truth", fontsize=8, loc="left")
    shows = f"boxes scoring {MIN_SCORE} or more; white: the true boxes" if detection else "predicted and true masks"
    figure.suptitle(f"The winner on held-out images ({shows})", fontsize=9)
    figure.tight_layout()
    write_atomic(out, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    plt.close(figure)
    return out


def detects_boxes(info: dict) -> bool:
    """Whether the exported model (its model.json) detects boxes (else it segments)."""
    return info["task"] == ObjectDetection.name
