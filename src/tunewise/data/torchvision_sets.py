"""CIFAR-10/100 and (Fashion-)MNIST in torchvision's formats: downloaded, or read from a root."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import shutil
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torchvision

from tunewise.config import DataConfig, default_cache_dir
from tunewise.data import DATASETS
from tunewise.data.base import DataSplits, ImageSet, split_stratified
from tunewise.errors import DataError

# Debian's dataset-fashion-mnist package puts the IDX files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class _LocalFilesCIFAR10(torchvision.datasets.CIFAR10):
    """CIFAR-10 whose files count as present when they exist; torchvision also checks md5s,
    which rejects any re-packed or trimmed copy a user (or a test) has."""

    def _check_integrity(self) -> bool:
        base = Path(self.root) / self.base_folder
        return all((base / name).is_file() for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class _LocalFilesCIFAR100(_LocalFilesCIFAR10, torchvision.datasets.CIFAR100):
    pass


def _cifar(config: DataConfig, cls: type[_LocalFilesCIFAR10], name: str) -> DataSplits:
    root = Path(config.root) if config.root else default_cache_dir() / "data"
    try:
        train = cls(str(root), train=True, download=not _has_files(cls, root))
        test = cls(str(root), train=False)
    except (URLError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise DataError(
            f"{name} is not under or not readable in {str(root)!r} and cannot be downloaded ({err}). Extract "
            f"{cls.filename} so that {str(root / cls.base_folder)!r} exists and pass --data-root "
            f"{root}."
        ) from None
    return _splits_from_arrays(train.data, train.targets, test.data, test.targets, train.classes, name, config)


def _has_files(cls: type[_LocalFilesCIFAR10], root: Path) -> bool:
    return all((root / cls.base_folder / n).is_file() for n, _ in cls.train_list + cls.test_list)


@DATASETS.register("cifar10")
def cifar10(config: DataConfig) -> DataSplits:
    """CIFAR-10: 50k train (val held out from it), 10k test, 32x32, 10 classes."""
    return _cifar(config, _LocalFilesCIFAR10, "cifar10")


@DATASETS.register("cifar100")
def cifar100(config: DataConfig) -> DataSplits:
    """CIFAR-100: 50k train (val held out from it), 10k test, 32x32, 100 classes."""
    return _cifar(config, _LocalFilesCIFAR100, "cifar100")


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
