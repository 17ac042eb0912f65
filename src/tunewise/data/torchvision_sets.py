"""CIFAR-10/100 and (Fashion-)MNIST in torchvision's formats: downloaded, or read from a root."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path
from typing import Any
from urllib.error import URLError

import numpy as np
import torchvision
from torchvision.datasets.utils import download_and_extract_archive

from tunewise.config import DataConfig, default_cache_dir
from tunewise.data import DATASETS
from tunewise.data.base import DataSplits, ImageSet, split_stratified
from tunewise.errors import DataError, one_line
from tunewise.safe_load import unpickle_arrays

# Debian's dataset-fashion-mnist package puts the IDX files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _cifar(config: DataConfig, dataset: Any, name: str) -> DataSplits:
    """Read torchvision's CIFAR layout under config.root (downloading it when a file is missing).

    The batches are pickles, and a pickle can run code as it loads, so they are read with
    `unpickle_arrays` (numpy arrays, lists, strings and numbers; any other global is refused) and
    never through torchvision's CIFAR10, whose loader calls plain `pickle.load`. No md5 is
    required: a re-packed or trimmed copy in the same format reads like the official files.
    """
    root = Path(config.root) if config.root else default_cache_dir() / "data"
    folder = root / dataset.base_folder
    train_files = [file for file, _ in dataset.train_list]
    test_files = [file for file, _ in dataset.test_list]
    if not all((folder / file).is_file() for file in train_files + test_files):
        try:
            download_and_extract_archive(dataset.url, str(root), filename=dataset.filename, md5=dataset.tgz_md5)
        except (URLError, OSError, RuntimeError, EOFError) as err:
            raise DataError(
                f"{name} is not under {str(root)!r} and cannot be downloaded ({one_line(err)}). Extract "
                f"{dataset.filename} so that {str(folder)!r} exists and pass --data-root {root}."
            ) from None
    fix = (f"Extract the official {dataset.filename} ({dataset.url}) so that {str(folder)!r} holds its files, "
           f"or write each batch as a dict of plain lists and a uint8 numpy array.")
    train_x, train_y = _read_batches(folder, train_files, fix)
    test_x, test_y = _read_batches(folder, test_files, fix)
    meta_path = folder / dataset.meta["filename"]
    classes = _read_batch(meta_path, fix).get(dataset.meta["key"])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{str(meta_path)!r} has no list of class names under {dataset.meta['key']!r}. {fix}")
    return _splits_from_arrays(train_x, train_y, test_x, test_y, classes, name, config)


def _read_batch(path: Path, fix: str) -> dict:
    try:
        batch = unpickle_arrays(path, DataError, fix)
    except OSError as err:
        raise DataError(f"cannot read {str(path)!r}: {err.strerror or one_line(err)}. {fix}") from None
    if not isinstance(batch, dict):
        raise DataError(f"{str(path)!r} holds a {type(batch).__name__}, not a CIFAR batch (a dict). {fix}")
    return batch


def _read_batches(folder: Path, files: list[str], fix: str) -> tuple[np.ndarray, list[int]]:
    """The images (N, 32, 32, 3) uint8 and labels of CIFAR python batches, in file order."""
    images: list[np.ndarray] = []
    labels: list[int] = []
    for file in files:
        path = folder / file
        batch = _read_batch(path, fix)
        data = batch.get("data")
        found = batch.get("labels", batch.get("fine_labels"))
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            shape = getattr(data, "shape", type(data).__name__)
            raise DataError(f"{str(path)!r} has no 'data' array of 3072 values per image (found {shape}). {fix}")
        pixels_fit = data.dtype.kind in "iu" and (not data.size or (data.min() >= 0 and data.max() <= 255))
        if data.dtype != np.uint8 and not pixels_fit:
            raise DataError(f"{str(path)!r} holds {data.dtype} pixel values, not 0-255 integers. {fix}")
        if not isinstance(found, list) or len(found) != len(data) \
                or not all(isinstance(y, int | np.integer) for y in found):
            count = len(found) if isinstance(found, list) else "no"
            raise DataError(f"{str(path)!r} has {count} integer labels for {len(data)} images ('labels', or "
                            f"'fine_labels' for CIFAR-100). {fix}")
        images.append(data.astype(np.uint8, copy=False))
        labels.extend(int(y) for y in found)
    stacked = np.vstack(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # HWC, as torchvision
    return stacked, labels


@DATASETS.register("cifar10")
def cifar10(config: DataConfig) -> DataSplits:
    """CIFAR-10: 50k train (val held out from it), 10k test, 32x32, 10 classes."""
    return _cifar(config, torchvision.datasets.CIFAR10, "cifar10")


@DATASETS.register("cifar100")
def cifar100(config: DataConfig) -> DataSplits:
    """CIFAR-100: 50k train (val held out from it), 10k test, 32x32, 100 classes."""
    return _cifar(config, torchvision.datasets.CIFAR100, "cifar100")


IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _mnist_like(config: DataConfig, cls: type, name: str, default_root: Path | None) -> DataSplits:
    """Read IDX files (plain or .gz) from config.root, unpacking into torchvision's layout."""
    source = Path(config.root) if config.root else default_root
    # one unpacked copy per source folder, so another --data-root never reads a stale copy
    tag = hashlib.sha256(str(source.resolve() if source else "download").encode()).hexdigest()[:12]
    cache = default_cache_dir() / "data" / f"{name}-{tag}"
    raw = cache / cls.__name__ / "raw"
    if source is not None and source.is_dir():
        for stem in IDX_FILES:
            found = [p for p in (source / stem, source / f"{stem}.gz") if p.is_file()]
            if not found:
                break
            _unpack(found[0], raw / stem)
    try:
        train = cls(str(cache), train=True, download=not all((raw / s).is_file() for s in IDX_FILES))
        test = cls(str(cache), train=False)
    except (URLError, OSError, RuntimeError) as err:
        raise DataError(
            f"{name} IDX files ({', '.join(IDX_FILES)}, plain or .gz) are not under "
            f"{str(source)!r} and cannot be downloaded ({err}). Pass --data-root FOLDER"
            + (" or apt-get install dataset-fashion-mnist." if name == "fashion_mnist" else ".")
        ) from None
    return _splits_from_arrays(
        train.data.numpy(), train.targets.tolist(), test.data.numpy(), test.targets.tolist(),
        list(train.classes), name, config,
    )


def _unpack(source: Path, target: Path) -> None:
    """Copy (gunzip) `source` to `target` unless target was made from this very file."""
    stamp = target.with_suffix(".source")
    signature = f"{source.resolve()}:{source.stat().st_size}:{source.stat().st_mtime_ns}"
    if target.is_file() and stamp.is_file() and stamp.read_text() == signature:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rb") as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)
    tmp.replace(target)
    stamp.write_text(signature)


@DATASETS.register("mnist")
def mnist(config: DataConfig) -> DataSplits:
    """MNIST digits: 60k train (val held out), 10k test, 28x28 grey (fed as RGB)."""
    return _mnist_like(config, torchvision.datasets.MNIST, "mnist", None)


@DATASETS.register("fashion_mnist")
def fashion_mnist(config: DataConfig) -> DataSplits:
    """Fashion-MNIST: 60k train (val held out), 10k test; read from Debian's package if present."""
    return _mnist_like(config, torchvision.datasets.FashionMNIST, "fashion_mnist", DEBIAN_FASHION_MNIST)


def _splits_from_arrays(train_x, train_y, test_x, test_y, classes, name, config) -> DataSplits:
    train_y, test_y = [int(y) for y in train_y], [int(y) for y in test_y]
    full = ImageSet(items=list(np.asarray(train_x)), labels=train_y, classes=list(classes), source=f"{name}:train")
    test = ImageSet(items=list(np.asarray(test_x)), labels=test_y, classes=list(classes), source=f"{name}:test")
    train_idx, val_idx = split_stratified(train_y, (1 - config.val_fraction, config.val_fraction), config.seed)
    return DataSplits(full.subset(train_idx), full.subset(val_idx), test, list(classes))
