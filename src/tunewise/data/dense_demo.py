"""Generated detection and segmentation demo sets: tinted Fashion-MNIST items pasted onto small canvases.

Both sets come from one generator, so with the same seed detection_demo's boxes and segmentation_demo's
masks describe the same canvases. Train, val and test draw their items from disjoint Fashion-MNIST images
(train and val from the two parts of its training file, test from its test file).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from tunewise.config import DataConfig
from tunewise.data import DATASETS
from tunewise.data.base import DataSplits
from tunewise.data.dense import DetectionSet, SegmentationSet
from tunewise.data.torchvision_sets import DEBIAN_FASHION_MNIST, fashion_mnist
from tunewise.errors import DataError

DEMO_CLASSES = ["t-shirt", "trouser", "dress", "sneaker", "bag"]
FASHION_LABELS = (0, 1, 3, 7, 8)
"""The Fashion-MNIST labels of DEMO_CLASSES (T-shirt/top, Trouser, Dress, Sneaker, Bag)."""
DEMO_SIZES = (400, 100, 100)
CANVAS = 128
SMALLEST, LARGEST = 24, 56
"""Side of a pasted item in pixels (the 28x28 square, the item itself is a little smaller)."""
EMPTY_SHARE = 0.1
MOST_OBJECTS = 3
THRESHOLD = 40
"""Grey level (0-255) above which a resized item's pixel belongs to the item."""
MIN_VISIBLE = 0.7
"""Share of an object's pixels that the objects pasted after it must leave visible."""
TRIES = 10


@dataclass
class Canvases:
    """Generated canvases and their objects, in paste order.

    Shape: images[i] (128, 128, 3) uint8; objects[i] (128, 128) uint8, 0 background, k+1 where object k
    is visible; boxes[i] (N_i, 4) float32, the extent of object k's visible pixels (x2, y2 exclusive);
    box_classes[i] (N_i,) int64; masks[i] (128, 128) uint8, 0 background, class+1 on object pixels;
    sources[i] (N_i,) int64, the index in the item pool of each object.
    """

    images: list[np.ndarray]
    objects: list[np.ndarray]
    boxes: list[np.ndarray]
    box_classes: list[np.ndarray]
    masks: list[np.ndarray]
    sources: list[np.ndarray]


def item_pools(config: DataConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (items (M, 28, 28) uint8, classes (M,) int64) of DEMO_CLASSES for train, val and test.

    Fashion-MNIST is read from config.root or Debian's /usr/share/datasets/fashion-mnist.
    """
    try:
        splits = fashion_mnist(DataConfig(data="fashion_mnist", root=config.root, seed=config.seed))
    except DataError as err:
        raise DataError(f"detection_demo and segmentation_demo paste Fashion-MNIST items, which are missing: {err} "
                        f"Debian's dataset-fashion-mnist package puts them in {str(DEBIAN_FASHION_MNIST)!r}, read "
                        "when no --data-root is given.") from None
    lookup = np.full(10, -1, dtype=np.int64)
    lookup[list(FASHION_LABELS)] = np.arange(len(FASHION_LABELS))
    pools = []
    for part in (splits.train, splits.val, splits.test):
        classes = lookup[np.asarray(part.labels)]
        keep = np.flatnonzero(classes >= 0)
        pools.append((np.stack([part.items[i] for i in keep]).astype(np.uint8), classes[keep]))
    return pools


def generate_canvases(pool: tuple[np.ndarray, np.ndarray], count: int, seed: int) -> Canvases:
    """`count` canvases of 0-3 objects (about EMPTY_SHARE of them empty), each item of `pool` used once at most.

    Deterministic for a pool and seed.
    """
    items, classes = pool
    if len(items) < count * MOST_OBJECTS:
        raise ValueError(f"a pool of {len(items)} items is too small for {count} canvases of up to {MOST_OBJECTS}")
    rng = np.random.default_rng(seed)
    order = iter(rng.permutation(len(items)))
    out = Canvases([], [], [], [], [], [])
    for _ in range(count):
        wanted = 0 if rng.random() < EMPTY_SHARE else int(rng.integers(1, MOST_OBJECTS + 1))
        image, objects, placed = _canvas(rng, [next(order) for _ in range(wanted)], items)
        kinds = classes[np.asarray(placed, dtype=np.int64)].astype(np.int64)
        boxes = np.array([_extent(objects == k + 1) for k in range(len(placed))], dtype=np.float32).reshape(-1, 4)
        out.images.append(image)
        out.objects.append(objects)
        out.boxes.append(boxes)
        out.box_classes.append(kinds)
        out.masks.append(np.concatenate([[0], kinds + 1]).astype(np.uint8)[objects])
        out.sources.append(np.asarray(placed, dtype=np.int64))
    return out


def _canvas(rng: np.random.Generator, picks: list[int], items: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Paste the items `picks` in turn where they leave earlier ones mostly visible.

    Returns the image (128, 128, 3) uint8, the object map (128, 128) uint8 and the picks placed.
    """
    image, behind = _background(rng)
    objects = np.zeros((CANVAS, CANVAS), dtype=np.uint8)
    sizes: list[int] = []  # each placed object's own pixel count
    placed: list[int] = []
    for pick in picks:
        side = int(rng.integers(SMALLEST, LARGEST + 1))
        resized = Image.fromarray(items[pick]).resize((side, side), Image.Resampling.BILINEAR)
        grey = np.asarray(resized, dtype=np.float32)
        shape = grey > THRESHOLD
        spot = _place(rng, objects, shape, sizes) if shape.any() else None
        if spot is None:
            continue
        y, x = spot
        colour = _tint(rng, behind)
        patch = image[y:y + side, x:x + side]
        patch[shape] = (colour * (0.35 + 0.65 * grey[shape, None] / 255)).astype(np.uint8)
        objects[y:y + side, x:x + side][shape] = len(placed) + 1
        sizes.append(int(shape.sum()))
        placed.append(pick)
    return image, objects, placed


def _place(rng: np.random.Generator, objects: np.ndarray, shape: np.ndarray,
           sizes: list[int]) -> tuple[int, int] | None:
    """A top-left corner (y, x) where `shape` covers at most 1 - MIN_VISIBLE of any placed object, or None."""
    side = shape.shape[0]
    visible = np.bincount(objects.ravel(), minlength=len(sizes) + 1)[1:]
    for _ in range(TRIES):
        y, x = (int(v) for v in rng.integers(0, CANVAS - side + 1, size=2))
        covered = np.bincount(objects[y:y + side, x:x + side][shape], minlength=len(sizes) + 1)[1:]
        if np.all(visible - covered >= MIN_VISIBLE * np.asarray(sizes)):
            return y, x
    return None


def _background(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A plain, gradient or mildly noisy (128, 128, 3) uint8 background and its mean colour (3,)."""
    start, end = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    kind = int(rng.integers(3))
    if kind == 0:
        end = start
    ramp = np.linspace(0, 1, CANVAS, dtype=np.float32)
    ramp = ramp[:, None, None] if rng.random() < 0.5 else ramp[None, :, None]
    canvas = np.broadcast_to(start + (end - start) * ramp, (CANVAS, CANVAS, 3))
    if kind == 2:
        canvas = canvas + rng.standard_normal(size=(CANVAS, CANVAS, 3), dtype=np.float32) * 8
    return np.clip(canvas, 0, 255).astype(np.uint8), (start + end) / 2


def _tint(rng: np.random.Generator, behind: np.ndarray) -> np.ndarray:
    """A random (3,) colour far enough from the background's mean `behind` to stand out."""
    for _ in range(20):
        colour = rng.uniform(60, 255, size=3)
        if np.linalg.norm(colour - behind) > 120:
            break
    return colour


def _extent(pixels: np.ndarray) -> list[float]:
    """The box [x1, y1, x2, y2] (x2, y2 exclusive) around the True pixels of (H, W) `pixels`."""
    rows, cols = np.flatnonzero(pixels.any(axis=1)), np.flatnonzero(pixels.any(axis=0))
    return [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]


def demo_canvases(config: DataConfig) -> list[Canvases]:
    """The train, val and test canvases (DEMO_SIZES) for config.seed."""
    pools = item_pools(config)
    return [generate_canvases(pool, count, int(np.random.SeedSequence([config.seed, part]).generate_state(1)[0]))
            for part, (pool, count) in enumerate(zip(pools, DEMO_SIZES, strict=True))]


def _names(split: str, count: int) -> list[str]:
    return [f"{split}{i:04d}.png" for i in range(count)]


@DATASETS.register("detection_demo")
def detection_demo(config: DataConfig) -> DataSplits:
    """400/100/100 generated 128x128 canvases with 0-3 boxed Fashion-MNIST items of 5 classes.

    The sizes are fixed; `config.val_fraction` and `config.test_fraction` do not apply.
    """
    train, val, test = [
        DetectionSet(items=c.images, boxes=c.boxes, box_classes=c.box_classes, classes=list(DEMO_CLASSES),
                     source=f"detection_demo:{split}:seed{config.seed}", names=_names(split, len(c.images)))
        for split, c in zip(("train", "val", "test"), demo_canvases(config), strict=True)]
    return DataSplits(train, val, test, list(DEMO_CLASSES))


@DATASETS.register("segmentation_demo")
def segmentation_demo(config: DataConfig) -> DataSplits:
    """The canvases of detection_demo (same seed, same canvases) with masks: 0 background, class+1 on items.

    The sizes are fixed; `config.val_fraction` and `config.test_fraction` do not apply.
    """
    classes = ["background", *DEMO_CLASSES]
    train, val, test = [
        SegmentationSet(items=c.images, masks=c.masks, classes=list(classes),
                        source=f"segmentation_demo:{split}:seed{config.seed}", names=_names(split, len(c.images)))
        for split, c in zip(("train", "val", "test"), demo_canvases(config), strict=True)]
    return DataSplits(train, val, test, classes)
