"""Data readers: image folders, torchvision's CIFAR/MNIST files, stratified splits, metrics.

Every file is tiny and generated in tmp_path; nothing is downloaded, nothing touches ~/.
"""

from __future__ import annotations

import gzip
import logging
import pickle
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tunewise.config import DataConfig
from tunewise.data import DataSplits, load_data, split_stratified
from tunewise.errors import DataError

NAMES = ("ant", "bee", "cat")


def _write_classes(root: Path, per_class: int | dict[str, int] = 10, names=NAMES, size: int = 8,
                   seed: int = 0) -> Path:
    """`root/<class>/<class>_NN.png`: tiny random RGB images, one subfolder per class."""
    rng = np.random.default_rng(seed)
    counts = per_class if isinstance(per_class, dict) else dict.fromkeys(names, per_class)
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}_{i:02d}.png")
    return root


def _paths(image_set) -> set[Path]:
    return {Path(p) for p in image_set.items}


def _per_class(image_set) -> Counter:
    return Counter(image_set.classes[label] for label in image_set.labels)


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    """Caches (the MNIST unpack cache above all) go under tmp_path, never the real home."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


# --- image folders -----------------------------------------------------------------------------


def test_single_folder_is_split_stratified_with_every_class_in_every_part(tmp_path):
    root = _write_classes(tmp_path / "imgs", per_class=20)
    splits = load_data(DataConfig(data=str(root), seed=0))

    assert isinstance(splits, DataSplits)
    assert splits.classes == list(NAMES) and splits.num_classes == 3
    assert splits.test is not None
    parts = splits.named()
    assert set(parts) == {"train", "val", "test"}
    for name, part in parts.items():
        assert part.classes == list(NAMES), name
        assert set(_per_class(part)) == set(NAMES), f"{name} lacks a class"
        # labels agree with the folder each file came from
        assert all(Path(p).parent.name == part.classes[y] for p, y in zip(part.items, part.labels, strict=True))
    # 20 per class at 0.7/0.15/0.15: 3 val, 3 test, 14 train per class
    assert _per_class(splits.train) == dict.fromkeys(NAMES, 14)
    assert _per_class(splits.val) == dict.fromkeys(NAMES, 3)
    assert _per_class(splits.test) == dict.fromkeys(NAMES, 3)
    # disjoint, and together exactly the files on disk
    train, val, test = _paths(splits.train), _paths(splits.val), _paths(splits.test)
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == set(root.rglob("*.png"))
    assert len(splits.train) + len(splits.val) + len(splits.test) == 60


def test_single_folder_split_is_deterministic_per_seed(tmp_path):
    root = _write_classes(tmp_path / "imgs", per_class=20)

    def split(seed):
        s = load_data(DataConfig(data=str(root), seed=seed))
        return [sorted(map(str, s.train.items)), sorted(map(str, s.val.items)),
                sorted(map(str, s.test.items))]

    assert split(0) == split(0)
    assert split(1) == split(1)
    assert split(0) != split(1)


def test_single_folder_fractions_are_configurable(tmp_path):
    root = _write_classes(tmp_path / "imgs", per_class=10)
    splits = load_data(DataConfig(data=str(root), val_fraction=0.2, test_fraction=0.0))
    assert splits.test is None
    assert _per_class(splits.val) == dict.fromkeys(NAMES, 2)
    assert _per_class(splits.train) == dict.fromkeys(NAMES, 8)


def test_train_val_test_layout_is_used_as_given(tmp_path):
    root = tmp_path / "imgs"
    _write_classes(root / "train", per_class=5, seed=1)
    _write_classes(root / "val", per_class=2, seed=2)
    _write_classes(root / "test", per_class=3, seed=3)

    splits = load_data(DataConfig(data=str(root), seed=0))
    assert splits.classes == list(NAMES)
    assert _paths(splits.train) == set((root / "train").rglob("*.png"))
    assert _paths(splits.val) == set((root / "val").rglob("*.png"))
    assert splits.test is not None
    assert _paths(splits.test) == set((root / "test").rglob("*.png"))
    # same class indices in every split
    for part in splits.named().values():
        assert all(Path(p).parent.name == NAMES[y] for p, y in zip(part.items, part.labels, strict=True))


def test_train_val_layout_without_test(tmp_path):
    root = tmp_path / "imgs"
    _write_classes(root / "train", per_class=4)
    _write_classes(root / "val", per_class=2, names=NAMES[:2])  # val may lack a class
    splits = load_data(DataConfig(data=str(root)))
    assert splits.test is None
    assert splits.classes == list(NAMES)
    assert _per_class(splits.val) == {"ant": 2, "bee": 2}
    assert [splits.classes[y] for y in sorted(set(splits.val.labels))] == ["ant", "bee"]


def test_train_only_layout_holds_out_val_from_train(tmp_path):
    root = tmp_path / "imgs"
    _write_classes(root / "train", per_class=20)
    splits = load_data(DataConfig(data=str(root), val_fraction=0.2))
    assert splits.test is None
    assert _per_class(splits.val) == dict.fromkeys(NAMES, 4)
    assert _per_class(splits.train) == dict.fromkeys(NAMES, 16)
    assert not (_paths(splits.train) & _paths(splits.val))


def test_train_only_layout_too_small_for_val_is_an_error(tmp_path):
    root = tmp_path / "imgs"
    _write_classes(root / "train", per_class=3)  # round(3 * 0.15) == 0: nothing to hold out
    with pytest.raises(DataError, match="validation"):
        load_data(DataConfig(data=str(root)))


def test_val_class_unknown_to_train_is_an_error_naming_it(tmp_path):
    root = tmp_path / "imgs"
    _write_classes(root / "train", per_class=3)
    _write_classes(root / "val", per_class=2, names=("ant", "bee", "zebra"))
    with pytest.raises(DataError, match="zebra"):
        load_data(DataConfig(data=str(root)))


def test_test_class_unknown_to_train_is_an_error_naming_it(tmp_path):
    root = tmp_path / "imgs"
    _write_classes(root / "train", per_class=3)
    _write_classes(root / "val", per_class=2)
    _write_classes(root / "test", per_class=2, names=("ant", "yak"))
    with pytest.raises(DataError, match="yak"):
        load_data(DataConfig(data=str(root)))


def test_max_train_per_class_subsamples_train_only(tmp_path):
    root = _write_classes(tmp_path / "imgs", per_class=20)
    full = load_data(DataConfig(data=str(root), seed=0))
    small = load_data(DataConfig(data=str(root), seed=0, max_train_per_class=4))

    assert _per_class(small.train) == dict.fromkeys(NAMES, 4)
    assert _paths(small.train) <= _paths(full.train)
    assert list(small.val.items) == list(full.val.items)
    assert list(small.test.items) == list(full.test.items)
    # deterministic too
    again = load_data(DataConfig(data=str(root), seed=0, max_train_per_class=4))
    assert list(again.train.items) == list(small.train.items)
    # a limit above the class size keeps everything
    roomy = load_data(DataConfig(data=str(root), seed=0, max_train_per_class=1000))
    assert list(roomy.train.items) == list(full.train.items)


def test_image_set_items_open_as_rgb(tmp_path):
    root = _write_classes(tmp_path / "imgs", per_class=4, size=8)
    # a greyscale image is fed as RGB too
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(root / "ant" / "grey.png")
    splits = load_data(DataConfig(data=str(root), val_fraction=0.25, test_fraction=0.0))
    images = [splits.train[i][0] for i in range(len(splits.train))]
    assert all(im.mode == "RGB" and im.size == (8, 8) for im in images)
    image, label = splits.train.with_transform(lambda im: np.asarray(im).shape)[0]
    assert image == (8, 8, 3) and label in (0, 1, 2)


def test_missing_path_and_unknown_name_are_errors(tmp_path):
    with pytest.raises(DataError, match="neither an existing folder"):
        load_data(DataConfig(data=str(tmp_path / "nope")))
    with pytest.raises(DataError, match="Did you mean 'cifar10'"):
        load_data(DataConfig(data="cifar1O"))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda r: r.mkdir(), "no class folders"),
        (lambda r: _write_classes(r, per_class=5, names=("only",)), "single class"),
        (lambda r: (_write_classes(r, per_class=5, names=("ant", "bee")), (r / "cat").mkdir()),
         "has no images"),
    ],
    ids=["empty", "one-class", "empty-class"],
)
def test_unusable_folders_are_errors(tmp_path, make, match):
    root = tmp_path / "imgs"
    make(root)
    with pytest.raises(DataError, match=match):
        load_data(DataConfig(data=str(root)))


def test_a_file_instead_of_a_folder_is_an_error(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    with pytest.raises(DataError, match="not a folder"):
        load_data(DataConfig(data=str(path)))


# --- unreadable files --------------------------------------------------------------------------


def _with_bad_files(root: Path) -> Path:
    _write_classes(root, per_class=10)
    rng = np.random.default_rng(7)
    (root / "bee" / "x.jpg").write_bytes(rng.integers(0, 256, 512, dtype=np.uint8).tobytes())
    (root / "cat" / "notes.txt").write_text("not an image\n")
    (root / "cat" / ".hidden.png").write_bytes(b"ignored: hidden files are not looked at")
    return root


def test_corrupt_and_non_image_files_are_skipped_with_a_counted_warning(tmp_path, caplog):
    root = _with_bad_files(tmp_path / "imgs")
    with caplog.at_level(logging.WARNING, logger="tunewise"):
        splits = load_data(DataConfig(data=str(root)))

    everything = _paths(splits.train) | _paths(splits.val) | _paths(splits.test)
    assert everything == set(root.rglob("*_??.png"))
    assert len(everything) == 30
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "skipped 2 " in warnings[0]
    assert "--strict" in warnings[0]


def test_clean_folder_logs_no_warning(tmp_path, caplog):
    root = _write_classes(tmp_path / "imgs", per_class=10)
    with caplog.at_level(logging.WARNING, logger="tunewise"):
        load_data(DataConfig(data=str(root)))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("bad", ["x.jpg", "notes.txt"])
def test_strict_raises_naming_the_file(tmp_path, bad):
    root = _write_classes(tmp_path / "imgs", per_class=10)
    if bad == "x.jpg":
        (root / "bee" / bad).write_bytes(np.random.default_rng(1).bytes(512))
    else:
        (root / "bee" / bad).write_text("hello")
    with pytest.raises(DataError, match=rf"{bad}.*--strict"):
        load_data(DataConfig(data=str(root), strict=True))


def test_truncated_png_is_skipped(tmp_path, caplog):
    root = _write_classes(tmp_path / "imgs", per_class=10, size=32)
    data = (root / "ant" / "ant_00.png").read_bytes()
    (root / "ant" / "cut.png").write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="tunewise"):
        splits = load_data(DataConfig(data=str(root)))
    everything = _paths(splits.train) | _paths(splits.val) | _paths(splits.test)
    assert root / "ant" / "cut.png" not in everything
    assert any("skipped 1 " in r.getMessage() for r in caplog.records)


# --- split_stratified --------------------------------------------------------------------------


def test_split_stratified_honours_fractions_per_class():
    labels = [0] * 100 + [1] * 40 + [2] * 20
    rng = np.random.default_rng(0)
    labels = rng.permutation(labels).tolist()
    train, val, test = split_stratified(labels, (0.6, 0.3, 0.1), seed=3)

    counts = {name: Counter(labels[i] for i in part)
              for name, part in (("train", train), ("val", val), ("test", test))}
    assert counts["val"] == {0: 30, 1: 12, 2: 6}
    assert counts["test"] == {0: 10, 1: 4, 2: 2}
    assert counts["train"] == {0: 60, 1: 24, 2: 12}
    # a partition of all indices, each part sorted
    assert sorted(train + val + test) == list(range(len(labels)))
    assert all(part == sorted(part) for part in (train, val, test))


def test_split_stratified_is_seeded():
    labels = [i % 4 for i in range(80)]
    assert split_stratified(labels, (0.7, 0.3), seed=5) == split_stratified(labels, (0.7, 0.3), seed=5)
    assert split_stratified(labels, (0.7, 0.3), seed=5) != split_stratified(labels, (0.7, 0.3), seed=6)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("fractions", [(0.7, 0.15, 0.15), (0.2, 0.4, 0.4), (0.0, 0.5, 0.5),
                                       (0.1, 0.9)])
def test_split_stratified_tiny_classes_keep_a_training_image(size, fractions):
    labels = [0] * size + [1] * 30
    parts = split_stratified(labels, fractions, seed=0)
    tiny = [sum(labels[i] == 0 for i in part) for part in parts]
    assert tiny[0] >= 1, f"class of {size} lost its training image: {tiny}"
    assert sum(tiny) == size
    assert sorted(i for part in parts for i in part) == list(range(len(labels)))


def test_split_stratified_labels_need_not_be_contiguous():
    labels = [7] * 10 + [2] * 10
    train, val = split_stratified(labels, (0.8, 0.2), seed=0)
    assert Counter(labels[i] for i in val) == {7: 2, 2: 2}
    assert len(train) == 16


# --- CIFAR-10 in torchvision's pickled layout --------------------------------------------------

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]


def _write_cifar10(root: Path, per_class_per_batch: int = 2, test_per_class: int = 3) -> dict:
    """cifar-10-batches-py as torchvision reads it: Python-2 style pickles with str keys."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        per_class = test_per_class if name == "test_batch" else per_class_per_batch
        labels = [c for c in range(10) for _ in range(per_class)]
        labels = rng.permutation(labels).tolist()
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        entry = {"batch_label": f"{name} of 5", "labels": labels, "data": data,
                 "filenames": [f"img_{i}.png" for i in range(len(labels))]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        written[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_CLASSES, "num_cases_per_batch": 20, "num_vis": 3072},
                    f, protocol=2)
    return written


def _hwc(row: np.ndarray) -> np.ndarray:
    return row.reshape(3, 32, 32).transpose(1, 2, 0)


def test_cifar10_from_local_files(tmp_path):
    written = _write_cifar10(tmp_path)
    splits = load_data(DataConfig(data="cifar10", root=str(tmp_path), seed=0))

    assert splits.classes == CIFAR_CLASSES
    assert len(splits.train) + len(splits.val) == 100  # 5 batches x 20
    # 10 per class at val_fraction 0.15: round(1.5) == 2 held out per class
    assert Counter(splits.val.labels) == dict.fromkeys(range(10), 2)
    assert Counter(splits.train.labels) == dict.fromkeys(range(10), 8)
    for item in splits.train.items:
        assert isinstance(item, np.ndarray) and item.shape == (32, 32, 3) and item.dtype == np.uint8

    # train + val are exactly the training batches (pixels and labels), with no overlap
    expected = {}
    for i in range(1, 6):
        data, labels = written[f"data_batch_{i}"]
        expected.update({_hwc(row).tobytes(): y for row, y in zip(data, labels, strict=True)})
    train = {x.tobytes(): y for x, y in zip(splits.train.items, splits.train.labels, strict=True)}
    val = {x.tobytes(): y for x, y in zip(splits.val.items, splits.val.labels, strict=True)}
    assert not set(train) & set(val)
    assert {**train, **val} == expected

    # test is the test batch, in order
    data, labels = written["test_batch"]
    assert splits.test is not None
    assert splits.test.labels == labels
    assert all(np.array_equal(x, _hwc(row)) for x, row in zip(splits.test.items, data, strict=True))

    image, label = splits.test[0]
    assert image.mode == "RGB" and image.size == (32, 32) and label == labels[0]


def test_cifar10_val_split_follows_the_seed(tmp_path):
    _write_cifar10(tmp_path)
    a = load_data(DataConfig(data="cifar10", root=str(tmp_path), seed=0))
    b = load_data(DataConfig(data="cifar10", root=str(tmp_path), seed=1))
    same = load_data(DataConfig(data="cifar10", root=str(tmp_path), seed=0))
    as_bytes = lambda s: sorted(x.tobytes() for x in s.val.items)  # noqa: E731
    assert as_bytes(a) == as_bytes(same)
    assert as_bytes(a) != as_bytes(b)


def test_cifar10_max_train_per_class(tmp_path):
    _write_cifar10(tmp_path)
    splits = load_data(DataConfig(data="cifar10", root=str(tmp_path), max_train_per_class=3))
    assert Counter(splits.train.labels) == dict.fromkeys(range(10), 3)
    assert len(splits.val) == 20 and len(splits.test) == 30


# --- (Fashion-)MNIST IDX files -----------------------------------------------------------------


def _idx_images(images: np.ndarray) -> bytes:
    n, rows, cols = images.shape
    return struct.pack(">iiii", 2051, n, rows, cols) + images.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">ii", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def _write_idx(root: Path, train_per_class: int = 4, test_per_class: int = 1, gz: bool = True):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = {}
    for prefix, per_class in (("train", train_per_class), ("t10k", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(10), per_class)).astype(np.uint8)
        images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        for stem, payload in ((f"{prefix}-images-idx3-ubyte", _idx_images(images)),
                              (f"{prefix}-labels-idx1-ubyte", _idx_labels(labels))):
            if gz:
                (root / f"{stem}.gz").write_bytes(gzip.compress(payload))
            else:
                (root / stem).write_bytes(payload)
        out[prefix] = (images, labels)
    return out


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_fashion_mnist_from_idx_files(tmp_path, gz):
    import torchvision

    written = _write_idx(tmp_path / "idx", gz=gz)
    splits = load_data(DataConfig(data="fashion_mnist", root=str(tmp_path / "idx"), seed=0))

    assert splits.classes == list(torchvision.datasets.FashionMNIST.classes)
    assert len(splits.train) + len(splits.val) == 40
    assert Counter(splits.val.labels) == dict.fromkeys(range(10), 1)  # round(4 * 0.15) == 1
    assert Counter(splits.train.labels) == dict.fromkeys(range(10), 3)
    images, labels = written["train"]
    expected = {im.tobytes(): int(y) for im, y in zip(images, labels, strict=True)}
    got = {x.tobytes(): y for s in (splits.train, splits.val) for x, y in zip(s.items, s.labels, strict=True)}
    assert got == expected
    assert all(x.shape == (28, 28) and x.dtype == np.uint8 for x in splits.train.items)

    test_images, test_labels = written["t10k"]
    assert splits.test.labels == test_labels.tolist()
    assert all(np.array_equal(x, y) for x, y in zip(splits.test.items, test_images, strict=True))
    image, _ = splits.test[0]
    assert image.mode == "RGB" and image.size == (28, 28)

    # the unpacked copy went to the (patched) home cache, and nowhere else
    data_cache = tmp_path / "home" / ".cache" / "tunewise" / "data"
    assert len(list(data_cache.glob("fashion_mnist-*/FashionMNIST/raw/train-images-idx3-ubyte"))) == 1


def test_mnist_idx_cache_is_refreshed_when_the_source_changes(tmp_path):
    import os

    _write_idx(tmp_path / "idx", train_per_class=4)
    first = load_data(DataConfig(data="mnist", root=str(tmp_path / "idx")))
    assert len(first.train) + len(first.val) == 40
    assert first.classes[0].startswith("0")

    _write_idx(tmp_path / "idx", train_per_class=6)  # newer files replace the cached copy
    later = 2_000_000_000  # make sure the new files look newer than the cached copy
    for p in (tmp_path / "idx").iterdir():
        os.utime(p, (later, later))
    second = load_data(DataConfig(data="mnist", root=str(tmp_path / "idx")))
    assert len(second.train) + len(second.val) == 60


def test_mnist_another_root_with_older_files_is_read(tmp_path):
    import os

    _write_idx(tmp_path / "a", train_per_class=4)
    assert len(load_data(DataConfig(data="mnist", root=str(tmp_path / "a"))).train) == 30
    _write_idx(tmp_path / "b", train_per_class=6)
    for p in (tmp_path / "b").iterdir():
        os.utime(p, (1_000_000_000, 1_000_000_000))  # files from 2001, as an archive keeps them
    splits = load_data(DataConfig(data="mnist", root=str(tmp_path / "b")))
    assert len(splits.train) + len(splits.val) == 60


# --- metrics -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("num_classes", [2, 5, 12])
def test_classification_metrics_match_scikit_learn(seed, num_classes):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    from tunewise.tasks.image_classification import classification_metrics

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    # only some classes in use, so some are absent from true, predicted or both
    used = rng.choice(num_classes, size=max(1, num_classes - 2), replace=False)
    true = rng.choice(used, n)
    pred = np.where(rng.random(n) < 0.5, true, rng.integers(0, num_classes, n))

    got = classification_metrics(pred, true, num_classes)
    assert got["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(true, pred))
    assert got["macro_f1"] == pytest.approx(
        sklearn_metrics.f1_score(true, pred, average="macro", zero_division=0))
    assert got["confusion_matrix"] == sklearn_metrics.confusion_matrix(
        true, pred, labels=list(range(num_classes))).tolist()


def test_classification_metrics_perfect_and_all_wrong():
    from tunewise.tasks.image_classification import classification_metrics

    y = np.array([0, 1, 2, 2])
    perfect = classification_metrics(y, y, 3)
    assert perfect["accuracy"] == 1.0 and perfect["macro_f1"] == 1.0
    wrong = classification_metrics((y + 1) % 3, y, 3)
    assert wrong["accuracy"] == 0.0 and wrong["macro_f1"] == 0.0
    assert np.trace(np.array(wrong["confusion_matrix"])) == 0
