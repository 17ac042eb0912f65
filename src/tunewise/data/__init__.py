"""Data readers, one per format, registered by name; a path is read as an image folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewise.config import DEFAULT_TASK, DataConfig
from tunewise.errors import DataError
from tunewise.registry import Registry, did_you_mean

if TYPE_CHECKING:
    from tunewise.data.base import DataSplits, ImageSet, split_stratified
    from tunewise.tasks import Task

DATASETS: Registry = Registry("data set")

__all__ = ["DATASETS", "DataSplits", "ImageSet", "load_data", "split_stratified"]


def __getattr__(name: str) -> Any:
    """The data set classes load on first use: they need torch, and `tunewise.data.images` (the image
    reader that `tunewise serve` uses on an ONNX export) must import without it."""
    if name in ("DataSplits", "ImageSet", "split_stratified"):
        from tunewise.data import base

        return getattr(base, name)
    raise AttributeError(f"module 'tunewise.data' has no attribute {name!r}")


def load_data(config: DataConfig, task: Task | str = DEFAULT_TASK) -> DataSplits:
    """Read and validate the data named by `config.data` for `task` (a task or its name): a
    registered name, or a local path that the task reads (`Task.read_path`: an image folder, COCO
    JSON or a VOC folder, images/ and masks/, a text file or folder).

    Raises:
        DataError: the path does not exist, holds no usable examples, has fewer than 2 classes,
            or holds another kind of data than the task reads.
    """
    from tunewise.data import dense_demo, dense_files, image_folder, text_demo, text_files, torchvision_sets  # noqa: F401

    task = _task(task)
    if config.data in DATASETS:
        splits = DATASETS.get(config.data)(config)
    elif Path(config.data).exists():
        splits = task.read_path(Path(config.data), config)
    else:
        hint = did_you_mean(config.data, DATASETS.names())
        raise DataError(
            f"data {config.data!r} is neither an existing folder nor a known data set.{hint} "
            f"Pass {task.path_help} or one of: {', '.join(DATASETS.names())}."
        )
    _check_kind(splits, config.data, task)
    if len(splits.val) == 0:
        raise DataError(f"data {config.data!r} leaves nothing for validation (--val-fraction "
                        f"{config.val_fraction}). Add examples, raise --val-fraction, or give a val split.")
    return splits.limited(config.max_train_per_class, config.seed)


def _task(task: Task | str) -> Task:
    if not isinstance(task, str):
        return task
    from tunewise.tasks import get_task  # a name: the caller did not make the task

    return get_task(task)


def _check_kind(splits: DataSplits, data: str, task: Task) -> None:
    if task.data_kind is None or isinstance(splits.train, task.data_kind):
        return
    from tunewise.tasks import all_tasks

    holds = next((t.name for t in all_tasks() if t.data_kind and isinstance(splits.train, t.data_kind)),
                 "another task")
    raise DataError(f"data {data!r} holds data for {holds}, but --task {task.name} reads {task.reads}. "
                    f"Pass --task {holds}, or data made for {task.name}.")
