"""Segmentation and detection from their ONNX exports with numpy and Pillow alone (no torch): the
inputs as the graphs take them, and the graphs' outputs as the rows `tunewise predict` gives.

Segmentation: the image is scaled to [0, 1] floats, resized to the tuned size (input_size square,
bilinear, antialiased: what dense_predict does with torchvision, here Pillow's float images),
normalized; the graph's logits (B, C, S, S) are resized back to the image's own size (bilinear,
align_corners=False: torch's `F.interpolate`) before the argmax, so a mask has the image's pixels.

Detection: the graph takes one image (3, H, W) in [0, 1] at its own size (the detector resizes and
normalizes inside, and maps its boxes back to the image's pixels), so it runs once per image; its
labels are class indices + 1 (0 is the background, dropped here).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tunewise.ship.onnx_model import RUNNERS

MIN_SCORE = 0.3
"""Boxes below this score are left out of the rows and the drawings (COCO JSON keeps all)."""


# --- segmentation --------------------------------------------------------------------------------

def segmentation_input(image: Image.Image, size: int, mean: list[float], std: list[float]) -> np.ndarray:
    """The image as a segmentation graph's input: [0, 1] floats resized to size x size (bilinear,
    antialiased, on floats as torchvision resizes a tensor), then normalized.

    Shape: -> (3, size, size) float32.
    """
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) * np.float32(1 / 255)
    if pixels.shape[:2] != (size, size):
        pixels = np.stack([_resize_float(pixels[..., c], size) for c in range(3)], axis=-1)
    return ((pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(2, 0, 1)


def _resize_float(channel: np.ndarray, size: int) -> np.ndarray:
    """Pillow's bilinear filter on a float image: the triangle filter widened when shrinking, as
    torch's `interpolate(antialias=True)` (which was written after it)."""
    resized = Image.fromarray(np.ascontiguousarray(channel), mode="F").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """torch's `F.interpolate(x, (height, width), mode="bilinear", align_corners=False)` (no antialias).

    Shape: x (C, h, w) -> (C, height, width) float32.
    """
    top, bottom, down = _taps(x.shape[1], height)
    left, right, across = _taps(x.shape[2], width)
    across = across[None, None, :]
    upper = x[:, top][:, :, left] * (1 - across) + x[:, top][:, :, right] * across
    lower = x[:, bottom][:, :, left] * (1 - across) + x[:, bottom][:, :, right] * across
    down = down[None, :, None]
    return (upper * (1 - down) + lower * down).astype(np.float32)


def _taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index: the two source indices and the second one's weight (half-pixel centres,
    clamped at the edges), in float32 as torch computes them: `scale * (i + 0.5) - 0.5` rounded once
    (its CPU kernels fuse it into one multiply-add; rounded twice, a source row far down a large
    image moves by a float32 step, and the logits by 1e-5)."""
    scale = np.float32(size_in / size_out)
    centres = (np.arange(size_out, dtype=np.float32) + np.float32(0.5)).astype(np.float64)
    source = np.maximum((np.float64(scale) * centres - 0.5).astype(np.float32), np.float32(0))
    first = np.minimum(source.astype(np.int64), size_in - 1)
    second = np.minimum(first + 1, size_in - 1)
    return first, second, (source - first).astype(np.float32)


def mask_from_logits(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """Class indices at the image's size: the logits resized back, then the argmax (first of ties).

    Shape: logits (C, S, S) -> (height, width) int64.
    """
    return resize_bilinear(logits.astype(np.float32), height, width).argmax(0)


def segmentation_row(mask: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """`{"mask_png": base64 palette PNG of class indices, "classes": {class: pixel share}}`,
    the shares as `tunewise predict` prints them (rounded to 4 places, absent classes left out)."""
    shares = np.bincount(mask.reshape(-1), minlength=len(classes)) / mask.size
    buffer = io.BytesIO()
    palette_mask(mask).save(buffer, format="PNG")
    return {"mask_png": base64.b64encode(buffer.getvalue()).decode("ascii"),
            "classes": {c: round(float(s), 4) for c, s in zip(classes, shares, strict=True) if s}}


def palette_mask(mask: np.ndarray) -> Image.Image:
    """Class indices as a palette PNG, as VOC stores them: the index survives, and it views in colour."""
    image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
    image.putpalette([channel for c in range(256) for channel in color(c)])
    return image


def color(index: int) -> tuple[int, int, int]:
    """A fixed, distinct colour per class index (VOC's bit-interleaved palette; 0 is black)."""
    r = g = b = 0
    for bit in range(8):
        r |= ((index >> 0) & 1) << (7 - bit)
        g |= ((index >> 1) & 1) << (7 - bit)
        b |= ((index >> 2) & 1) << (7 - bit)
        index >>= 3
    return r, g, b


# --- detection -----------------------------------------------------------------------------------

def detection_input(image: Image.Image) -> np.ndarray:
    """The image as a detection graph's input: its own size, [0, 1] floats.

    Shape: -> (3, H, W) float32.
    """
    return (np.asarray(image.convert("RGB"), dtype=np.float32) * np.float32(1 / 255)).transpose(2, 0, 1)


def detection_row(boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray, classes: list[str],
                  min_score: float = MIN_SCORE) -> dict[str, Any]:
    """`{"objects": [{"label", "score", "box": [x0, y0, x1, y1]}]}` in the image's pixels, best first,
    those scoring `min_score` or more, rounded as `tunewise predict` prints them.

    Shape: boxes (N, 4), labels (N,) class index + 1 (0: background, left out), scores (N,).
    """
    keep = (scores >= min_score) & (labels > 0)
    return {"objects": [{"label": classes[int(c) - 1], "score": round(float(s), 4),
                       "box": [round(float(v), 1) for v in b]}
                      for b, c, s in zip(boxes[keep], labels[keep], scores[keep], strict=True)]}


# --- runners (onnx_model's Runner protocol) ---------------------------------------------------------

@RUNNERS.register("masks")
class MaskRunner:
    """A segmentation export: a batch of images in one run; one row per image.

    Args:
        folder: the export's folder (unused: everything is in onnx.json).
        meta: onnx.json's contents; its "preprocessing" holds input_size, mean and std.
    """

    reads = "image"

    def __init__(self, folder: Path, meta: dict) -> None:
        self.spec = meta["preprocessing"]
        self.classes: list[str] = meta["classes"]

    def feeds(self, inputs: list[Image.Image]) -> tuple[dict[str, np.ndarray], list[tuple[int, int]]]:
        """The graph's "images" (B, 3, S, S), and each image's (height, width) to resize back to."""
        spec = self.spec
        images = np.stack([segmentation_input(image, spec["input_size"], spec["mean"], spec["std"])
                           for image in inputs])
        return {"images": images}, [(image.height, image.width) for image in inputs]

    def rows(self, outputs: list[np.ndarray], sizes: list[tuple[int, int]]) -> list[dict]:
        """One row per image from the logits (B, C, S, S)."""
        return [segmentation_row(mask_from_logits(logits, *size), self.classes)
                for logits, size in zip(outputs[0], sizes, strict=True)]


@RUNNERS.register("boxes")
class BoxRunner:
    """A detection export: one image per run (each at its own size); one row per image.

    Args:
        folder: the export's folder (unused: everything is in onnx.json).
        meta: onnx.json's contents.
    """

    reads = "image"

    def __init__(self, folder: Path, meta: dict) -> None:
        self.classes: list[str] = meta["classes"]

    def predict(self, session: Any, inputs: list[Image.Image]) -> list[dict]:
        """One row per image, each its own run of the onnxruntime `session`."""
        return [self.rows(session.run(None, self.feeds([image])[0]), None)[0] for image in inputs]

    def feeds(self, inputs: list[Image.Image]) -> tuple[dict[str, np.ndarray], None]:
        """The graph's "image" (3, H, W): one image only (the graph has no batch axis)."""
        if len(inputs) != 1:
            raise ValueError(f"a detection graph runs one image at a time, not {len(inputs)}")
        return {"image": detection_input(inputs[0])}, None

    def rows(self, outputs: list[np.ndarray], state: None) -> list[dict]:
        """The row of the one image: outputs are boxes (N, 4), labels (N,), scores (N,)."""
        boxes, labels, scores = outputs
        return [detection_row(boxes, labels, scores, self.classes)]
