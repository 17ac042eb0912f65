"""Data readers, one per format, registered by name; a path is read as an image folder."""

from __future__ import annotations

from pathlib import Path

from tunewise.config import DataConfig
from tunewise.data.base import DataSplits, ImageSet, split_stratified
from tunewise.data.dense import DetectionSet, SegmentationSet
from tunewise.data.text import QASet, TextSet, TokenSet
from tunewise.errors import DataError
from tunewise.registry import Registry, did_you_mean

DATASETS: Registry = Registry("data set")

__all__ = ["DATASETS", "DataSplits", "ImageSet", "load_data", "split_stratified"]


# what each task reads, and how to say it
KINDS = {
    "image_classification": (ImageSet, "images with one class each"),
    "text_classification": (TextSet, "texts (or text pairs) with one class each"),
    "token_classification": (TokenSet, "sentences of words with one tag each"),
    "question_answering": (QASet, "SQuAD-style questions over contexts"),
    "object_detection": (DetectionSet, "images with boxes"),
    "semantic_segmentation": (SegmentationSet, "images with masks"),
}

# what to pass as a path, for tasks where an image folder would be the wrong advice
PATHS = {
    "image_classification": "an image folder (one subfolder per class, or train/ val/ [test/] of those)",
    "object_detection": "a COCO JSON file, a folder of COCO split files, or a Pascal VOC folder",
    "semantic_segmentation": "a folder of images/ and masks/ (or train/ val/ [test/] of those, or VOC's layout)",
}


def load_data(config: DataConfig, task: str = "image_classification") -> DataSplits:
    """Read and validate the data named by `config.data` for `task`: a registered name, an image
    folder (image classification), detection data (COCO JSON, a VOC folder), segmentation data (images/
    and masks/, VOC), or a text file or folder (text tasks).

    Raises:
        DataError: the path does not exist, holds no usable examples, has fewer than 2 classes,
            or holds another kind of data than the task reads.
    """
    from tunewise.data import dense_demo, dense_files, image_folder, text_demo, text_files, torchvision_sets  # noqa: F401

    if config.data in DATASETS:
        splits = DATASETS.get(config.data)(config)
    elif Path(config.data).exists() and task == "image_classification":
        splits = image_folder.read_splits(Path(config.data), config)
    elif Path(config.data).exists() and task == "object_detection":
        splits = dense_files.read_detection_data(Path(config.data), config)
    elif Path(config.data).exists() and task == "semantic_segmentation":
        splits = dense_files.read_segmentation_data(Path(config.data), config)
    elif Path(config.data).exists():
        splits = text_files.read_text_data(Path(config.data), config, task)
    else:
        hint = did_you_mean(config.data, DATASETS.names())
        raise DataError(
            f"data {config.data!r} is neither an existing folder nor a known data set.{hint} "
            f"Pass {PATHS.get(task, PATHS['image_classification'])} or one of: {', '.join(DATASETS.names())}."
        )
    _check_kind(splits, config.data, task)
    if len(splits.val) == 0:
        raise DataError(f"data {config.data!r} leaves nothing for validation (--val-fraction "
                        f"{config.val_fraction}). Add examples, raise --val-fraction, or give a val split.")
    return splits.limited(config.max_train_per_class, config.seed)


def _check_kind(splits: DataSplits, data: str, task: str) -> None:
    kind, wanted = KINDS.get(task, (None, ""))
    if kind is None or isinstance(splits.train, kind):
        return
    holds = next((name for name, (k, _) in KINDS.items() if isinstance(splits.train, k)), "another task")
    raise DataError(f"data {data!r} holds data for {holds}, but --task {task} reads {wanted}. "
                    f"Pass --task {holds}, or data made for {task}.")
