"""Data readers, one per format, registered by name; a path is read as an image folder."""

from __future__ import annotations

from pathlib import Path

from tunewise.config import DataConfig
from tunewise.data.base import DataSplits, ImageSet, split_stratified
from tunewise.errors import DataError
from tunewise.registry import Registry, did_you_mean

DATASETS: Registry = Registry("data set")

__all__ = ["DATASETS", "DataSplits", "ImageSet", "load_data", "split_stratified"]


def load_data(config: DataConfig) -> DataSplits:
    """Read and validate the data named by `config.data`: a registered name or an image folder.

    Raises:
        DataError: the path does not exist, holds no usable images, or has fewer than 2 classes.
    """
    from tunewise.data import image_folder, torchvision_sets  # noqa: F401

    if config.data in DATASETS:
        splits = DATASETS.get(config.data)(config)
    elif Path(config.data).exists():
        splits = image_folder.read_splits(Path(config.data), config)
    else:
        hint = did_you_mean(config.data, DATASETS.names())
        raise DataError(
            f"data {config.data!r} is neither an existing folder nor a known data set.{hint} "
            f"Pass an image folder (one subfolder per class, or train/ val/ [test/] of those) "
            f"or one of: {', '.join(DATASETS.names())}."
        )
    if len(splits.val) == 0:
        raise DataError(f"data {config.data!r} leaves no image for validation (--val-fraction "
                        f"{config.val_fraction}). Add images, raise --val-fraction, or give a val/ folder.")
    return splits.limited(config.max_train_per_class, config.seed)
