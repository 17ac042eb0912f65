"""Images with boxes (object detection) or with a class per pixel (semantic segmentation).

Items are file paths or uint8 arrays, as in ImageSet. A set with a `transform` hands it the
image together with its annotation as torchvision tv_tensors, so a `transforms.v2` pipeline
moves boxes and masks with the image (flips, resizes, crops).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import Field, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from tunewise.data.images import open_image
from tunewise.errors import DataError

IGNORE_INDEX = 255
"""A mask value that no metric or loss counts (VOC's object borders, unlabelled pixels)."""


class _PerImage(Dataset):
    """What both sets share: one entry per image in `items`, `names` and each field of `per_image`."""

    per_image: ClassVar[tuple[str, ...]]
    items: Sequence[Path | np.ndarray]
    names: list[str] | None
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # each subclass is a dataclass: replace() takes it

    def __len__(self) -> int:
        return len(self.items)

    def name(self, index: int) -> str:
        return self.names[index] if self.names else f"image{index}"

    def subset(self, indices: Sequence[int]) -> Self:
        pick = lambda values: None if values is None else [values[i] for i in indices]  # noqa: E731
        return replace(self, **{field: pick(getattr(self, field)) for field in ("items", "names", *self.per_image)})

    def with_transform(self, transform: Callable | None) -> Self:
        return replace(self, transform=transform)


@dataclass
class DetectionSet(_PerImage):
    """Images with zero or more boxes each.

    Shape: boxes[i] (N_i, 4) float32, x1 y1 x2 y2 in pixels of item i; box_classes[i] (N_i,)
    int64 in [0, C). An image without boxes (N_i = 0) is a negative example.

    `self[i]` is `(image, {"boxes": BoundingBoxes, "labels": LongTensor})`, both passed
    through `transform(image, target)` when there is one.
    """

    items: Sequence[Path | np.ndarray]
    boxes: list[np.ndarray]
    box_classes: list[np.ndarray]
    classes: list[str]
    source: str
    names: list[str] | None = None
    """Each image's file name (COCO's file_name), for exports; None: `image<i>`."""
    transform: Callable | None = None
    per_image: ClassVar[tuple[str, ...]] = ("boxes", "box_classes")

    def __getitem__(self, index: int):
        image = open_image(self.items[index])
        target = {
            "boxes": tv_tensors.BoundingBoxes(torch.as_tensor(self.boxes[index], dtype=torch.float32).reshape(-1, 4),
                                              format="XYXY", canvas_size=(image.height, image.width)),
            "labels": torch.as_tensor(self.box_classes[index], dtype=torch.int64).reshape(-1),
        }
        return self.transform(image, target) if self.transform else (image, target)

    def fingerprint(self) -> str:
        digest = _items_digest(self.source, self.items)
        for boxes, classes in zip(self.boxes, self.box_classes, strict=True):
            digest.update(np.ascontiguousarray(boxes, dtype=np.float32).tobytes())
            digest.update(np.ascontiguousarray(classes, dtype=np.int64).tobytes())
        return digest.hexdigest()[:16]


@dataclass
class SegmentationSet(_PerImage):
    """Images with a mask of class indices each.

    Shape: masks[i] is a path to a PNG or a uint8 array (H, W), the same size as item i;
    values in [0, C) or IGNORE_INDEX.

    `self[i]` is `(image, Mask)`, both passed through `transform(image, mask)` when there is one.
    """

    items: Sequence[Path | np.ndarray]
    masks: Sequence[Path | np.ndarray]
    classes: list[str]
    source: str
    names: list[str] | None = None
    transform: Callable | None = None
    per_image: ClassVar[tuple[str, ...]] = ("masks",)

    def __getitem__(self, index: int):
        image = open_image(self.items[index])
        mask = tv_tensors.Mask(torch.from_numpy(read_mask(self.masks[index])))
        unknown = mask[(mask != IGNORE_INDEX) & (mask >= len(self.classes))]
        if len(unknown):
            raise DataError(f"the mask of {self.name(index)!r} holds class {int(unknown[0])}, but there are "
                            f"{len(self.classes)} classes ({', '.join(self.classes[:6])}...). List every class in "
                            f"classes.txt, or mark pixels to ignore with {IGNORE_INDEX}.")
        if mask.shape != (image.height, image.width):
            raise DataError(f"the mask of {self.name(index)!r} is {mask.shape[1]}x{mask.shape[0]} pixels but its "
                            f"image is {image.width}x{image.height}. Give every image a mask of its own size.")
        return self.transform(image, mask) if self.transform else (image, mask)

    def fingerprint(self) -> str:
        digest = _items_digest(self.source, self.items)
        for mask in self.masks:
            digest.update(str(mask).encode() if isinstance(mask, Path) else np.ascontiguousarray(mask).tobytes())
        return digest.hexdigest()[:16]


def read_mask(mask: Path | np.ndarray) -> np.ndarray:
    """A mask of class indices (H, W) uint8: an array as is, or a palette or grayscale PNG's indices."""
    if isinstance(mask, np.ndarray):
        return np.ascontiguousarray(mask, dtype=np.uint8)
    try:
        with Image.open(mask) as image:
            if image.mode not in ("P", "L"):
                raise DataError(f"mask {str(mask)!r} is a {image.mode} image; a mask holds one class index per "
                                "pixel. Save it as a palette (P) or grayscale (L) PNG of indices.")
            return np.asarray(image, dtype=np.uint8).copy()
    except OSError as err:
        raise DataError(f"cannot read mask {str(mask)!r}: {err}. Remove or replace the file.") from None


def _items_digest(source: str, items: Sequence[Path | np.ndarray]):
    digest = hashlib.sha256(source.encode())
    for item in items:
        if isinstance(item, Path):
            stat = item.stat()
            digest.update(f"{item}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        else:
            digest.update(np.ascontiguousarray(item).tobytes())
    return digest
