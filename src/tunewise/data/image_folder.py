"""Image folders: class subfolders, either split into train/ val/ [test/] or split for you."""

from __future__ import annotations

from pathlib import Path

from tunewise.config import DataConfig
from tunewise.data import DATASETS
from tunewise.data.base import DataSplits, ImageSet, split_stratified
from tunewise.data.images import IMAGE_SUFFIXES, Unreadable
from tunewise.errors import DataError


def read_splits(root: Path, config: DataConfig) -> DataSplits:
    """Read `root`: train/ val/ [test/] folders of classes, or one folder of classes.

    A single folder is split stratified with `config.seed` into train, val and test.
    """
    if not root.is_dir():
        raise DataError(f"data {str(root)!r} is a file, not a folder. Pass a folder of class folders, or TFRecord "
                        "files (.tfrecord, .tfrecords, .tfrec).")
    if (root / "train").is_dir():
        train = read_classes(root / "train", config.strict)
        test = _optional(root / "test", train, config)
        if (root / "val").is_dir():
            return DataSplits(train, read_classes(root / "val", config.strict, train.classes), test, train.classes)
        return hold_out_val(train, test, config)
    return split_three_ways(read_classes(root, config.strict), config)


def hold_out_val(train: ImageSet, test: ImageSet | None, config: DataConfig) -> DataSplits:
    """The splits of a training set given without validation: --val-fraction of it, stratified, validates."""
    fractions = (1 - config.val_fraction, config.val_fraction)
    train_idx, val_idx = split_stratified(train.labels, fractions, config.seed)
    return DataSplits(train.subset(train_idx), train.subset(val_idx), test, train.classes)


def split_three_ways(images: ImageSet, config: DataConfig) -> DataSplits:
    """The splits of one set of images: train, val and test, stratified (--val-fraction, --test-fraction)."""
    fractions = (1 - config.val_fraction - config.test_fraction, config.val_fraction, config.test_fraction)
    train_idx, val_idx, test_idx = split_stratified(images.labels, fractions, config.seed)
    test = images.subset(test_idx) if test_idx else None
    return DataSplits(images.subset(train_idx), images.subset(val_idx), test, images.classes)


def _optional(folder: Path, train: ImageSet, config: DataConfig) -> ImageSet | None:
    return read_classes(folder, config.strict, train.classes) if folder.is_dir() else None


def read_classes(folder: Path, strict: bool, classes: list[str] | None = None) -> ImageSet:
    """One folder per class, images inside; each file is decoded once, and the unreadable ones are
    skipped (one warning counts them) or, with `strict`, fatal.

    Args:
        classes: the training classes, when reading val/test: other class names are an error.
    """
    found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise DataError(f"{str(folder)!r} has no class folders. Put each class's images in a "
                        "subfolder named after the class (cats/, dogs/).")
    if classes is None:
        if len(found) < 2:
            raise DataError(f"{str(folder)!r} has a single class ({found[0]!r}); classification "
                            "needs at least 2 class folders.")
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{str(folder)!r} has classes the training set does not: {', '.join(unknown)}. "
                        f"Training classes: {', '.join(classes)}.")
    items, labels, unreadable = [], [], Unreadable(strict)
    for label, name in enumerate(classes):
        if name not in found:
            continue
        files = sorted(p for p in (folder / name).iterdir() if p.is_file() and not p.name.startswith("."))
        for other in (p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES):
            unreadable.skip(other, f"not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})")
        good = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES and unreadable.usable(p)]
        if not good:
            raise DataError(f"class folder {str(folder / name)!r} has no images "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))}). Add images or remove the folder.")
        items += good
        labels += [label] * len(good)
    unreadable.warn(folder)
    return ImageSet(items=items, labels=labels, classes=list(classes), source=str(folder.resolve()))


@DATASETS.register("textile")
def textile(config: DataConfig) -> DataSplits:
    """2,000 simulated textile images in 3 classes, shipped by the conformal-clip-data package."""
    try:
        from conformal_clip_data import textile_simulated_root
    except ImportError:
        raise DataError("the textile images are not installed. Run: pip install conformal-clip-data") from None
    return read_splits(Path(textile_simulated_root()), config)
