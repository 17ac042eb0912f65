"""Image sets as plain lists (a file path, an in-memory array or an encoded image's bytes per item) and
their splits."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, Self

import numpy as np
from torch.utils.data import Dataset

from tunewise.data.images import open_image


@dataclass
class ImageSet(Dataset):
    """Labelled images; items are file paths, uint8 arrays (H, W) or (H, W, 3), or the bytes of an
    encoded image (JPEG, PNG: what a TFRecord holds).

    `self[i]` is `(transform(PIL image), label)`; with no transform, the PIL image.
    """

    items: Sequence[Path | np.ndarray | bytes]
    labels: list[int]
    classes: list[str]
    source: str
    transform: Callable | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = open_image(self.items[index])
        return (self.transform(image) if self.transform else image), self.labels[index]

    def subset(self, indices: Sequence[int]) -> ImageSet:
        return replace(
            self,
            items=[self.items[i] for i in indices],
            labels=[self.labels[i] for i in indices],
        )

    def with_transform(self, transform: Callable | None) -> ImageSet:
        return replace(self, transform=transform)

    def fingerprint(self) -> str:
        """A stable digest of what the set holds, for feature-cache keys."""
        digest = hashlib.sha256(self.source.encode())
        for item, label in zip(self.items, self.labels, strict=True):
            if isinstance(item, Path):
                stat = item.stat()
                digest.update(f"{item}:{stat.st_size}:{stat.st_mtime_ns}:{label};".encode())
            elif isinstance(item, bytes):
                digest.update(item)
                digest.update(f":{len(item)}:{label};".encode())
            else:
                digest.update(np.ascontiguousarray(item).tobytes())
                digest.update(f":{label};".encode())
        return digest.hexdigest()[:16]


KEPT_PIXELS_BYTES = 1 << 30
"""The most memory one split's kept pixels may take (KeptPixels): 1 GiB, 7,000 images at 224 px."""


class KeptPixels(Dataset):
    """An ImageSet whose images, once read a second time, are kept in memory decoded, resized and cropped
    (uint8): a split read every epoch through a transform that draws nothing (validation, and training
    without augmentation) is decoded twice per run rather than once per epoch, and one read once (a test
    split, a feature pass, a prediction) holds no memory. `first_read=True` keeps them from the first read,
    for a split known to be read again (the training split of a run of several epochs). Item i is,
    bit for bit, what
    `data.with_transform(Compose([*pixels, *scale]))[i]` is. Kept in the process that reads it, so for
    loaders without worker processes (tasks/image_classification.py)."""

    def __init__(self, data: ImageSet, pixels: list[Callable], scale: list[Callable], first_read: bool = False) -> None:
        from torchvision.transforms import v2

        self.data = data.with_transform(v2.Compose(pixels))
        self.scale = v2.Compose(scale)
        self.first_read = first_read
        self.seen: set[int] = set()
        self.kept: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        pixels = self.kept.get(index)
        if pixels is None:
            pixels = self.data[index][0]
            if self.first_read or index in self.seen:
                self.kept[index] = pixels
            else:
                self.seen.add(index)
        return self.scale(pixels), self.data.labels[index]

    @staticmethod
    def fits_in_memory(data: ImageSet, size: int) -> bool:
        """Whether `data`'s images at `size` x `size` fit in KEPT_PIXELS_BYTES."""
        return len(data) * 3 * size * size <= KEPT_PIXELS_BYTES


class Examples(Protocol):
    """What DataSplits needs of a split, whatever it holds: ImageSet, and the text (data/text.py)
    and dense (data/dense.py) sets."""

    classes: list[str]
    source: str

    def __len__(self) -> int: ...

    def subset(self, indices: Sequence[int]) -> Self: ...

    def fingerprint(self) -> str: ...


@dataclass
class DataSplits:
    """Train, validation and (optional) test sets sharing one class list."""

    train: Examples
    val: Examples
    test: Examples | None
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def named(self) -> dict[str, Examples]:
        named = {"train": self.train, "val": self.val}
        if self.test is not None:
            named["test"] = self.test
        return named

    def limited(self, per_class: int | None, seed: int) -> DataSplits:
        """At most `per_class` training examples per class (for quick runs); val/test unchanged.
        Sets without one class per example (NER, QA) keep `per_class` examples in all."""
        if per_class is None:
            return self
        rng = np.random.default_rng(seed)
        if not hasattr(self.train, "labels"):
            picked = rng.permutation(len(self.train))[:per_class]
            return replace(self, train=self.train.subset(sorted(picked.tolist())))
        labels = np.asarray(self.train.labels)
        keep = [
            i
            for c in range(self.num_classes)
            for i in sorted(rng.permutation(np.flatnonzero(labels == c))[:per_class])
        ]
        return replace(self, train=self.train.subset(sorted(keep)))


def split_stratified(
    labels: Sequence[int], fractions: Sequence[float], seed: int
) -> list[list[int]]:
    """Indices of each part, per class in proportion; the first part takes the remainder.

    Example: fractions (0.7, 0.15, 0.15) gives train, val and test indices, every class in
    each part where it has enough images (at least one in train).
    """
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    labels_arr = np.asarray(labels)
    for c in np.unique(labels_arr):
        members = rng.permutation(np.flatnonzero(labels_arr == c)).tolist()
        counts = [round(len(members) * f) for f in fractions[1:]]
        if len(members) - sum(counts) < 1:  # tiny classes keep one training image
            counts = [min(n, max(0, len(members) - 1 - sum(counts[:j]))) for j, n in enumerate(counts)]
        start = len(members) - sum(counts)
        parts[0].extend(members[:start])
        for j, n in enumerate(counts, start=1):
            parts[j].extend(members[start : start + n])
            start += n
    return [sorted(p) for p in parts]
