"""TFRecord files of tf.train.Example images: layouts, keys, checksums, and a fit on them.

The files are written by conftest.TFRecordWriter: TensorFlow's framing, written here, around Examples made with
tunewise's own message class (the `tfrecord` package's writer would put `tensorflow.Example` in
protobuf's default pool, and TensorFlow, which Keras imports to save a model when it is installed,
then fails to import in the same process). The slow tests have TensorFlow itself write the files, in
a subprocess: the check against an independent writer.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import logging
import os
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import TFRecordWriter
from PIL import Image

import tunewise
from tunewise import DataConfig, TrainConfig
from tunewise.data import load_data
from tunewise.errors import DataError

COLOURS = ("red", "green", "blue")
IDS = (0, 1, 2)


def encoded(channel: int, fmt: str = "PNG", seed: int = 0) -> bytes:
    """A 16x16 image whose dominant colour is `channel`: the class can be told from the pixels."""
    pixels = np.random.default_rng(seed).integers(0, 60, (16, 16, 3))
    pixels[..., channel] += 190
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


def write(path: Path, per_class: int = 6, ids=IDS, names=COLOURS, fmt: str = "PNG", keys=None) -> Path:
    """A TFRecord file of `per_class` records per class id, each with its image, id and (if `names`) name."""
    image_key, label_key, name_key = keys or ("image/encoded", "image/class/label", "image/class/text")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = TFRecordWriter(str(path))
    for i in range(per_class):
        for c, class_id in enumerate(ids):
            record = {image_key: (encoded(c, fmt, seed=i), "byte"), label_key: (class_id, "int")}
            if names:
                record[name_key] = (names[c].encode(), "byte")
            writer.write(record)
    writer.close()
    return path


def colour_of(image: Image.Image) -> str:
    return COLOURS[int(np.asarray(image).reshape(-1, 3).mean(0).argmax())]


def per_class(image_set) -> Counter:
    return Counter(image_set.classes[label] for label in image_set.labels)


def assert_labels_match_pixels(image_set) -> None:
    for i in range(len(image_set)):
        image, label = image_set[i]
        assert colour_of(image) == image_set.classes[label]


# --- layouts -------------------------------------------------------------------------------------


def test_one_file_is_split_stratified_with_its_class_names(tmp_path):
    path = write(tmp_path / "flowers.tfrecord", per_class=10)
    splits = load_data(DataConfig(data=str(path), val_fraction=0.2, test_fraction=0.2))

    assert splits.classes == list(COLOURS)
    assert splits.test is not None
    assert per_class(splits.train) == dict.fromkeys(COLOURS, 6)
    assert per_class(splits.val) == per_class(splits.test) == dict.fromkeys(COLOURS, 2)
    for part in (splits.train, splits.val, splits.test):
        assert_labels_match_pixels(part)


def test_a_folder_of_shards_named_for_no_split_is_one_set(tmp_path):
    write(tmp_path / "data" / "part-00000-of-00002.tfrecord", per_class=5)
    write(tmp_path / "data" / "part-00001-of-00002.tfrecord", per_class=5)
    splits = load_data(DataConfig(data=str(tmp_path / "data")))

    assert len(splits.train) + len(splits.val) + len(splits.test) == 30
    assert splits.classes == list(COLOURS)


def test_files_named_for_splits_are_those_splits(tmp_path):
    data = tmp_path / "data"
    write(data / "train-00000-of-00002.tfrecord", per_class=4)
    write(data / "train-00001-of-00002.tfrecord", per_class=3, fmt="JPEG")
    write(data / "validation-00000-of-00001.tfrecords", per_class=2)
    write(data / "test.tfrec", per_class=1)
    (data / "dataset_info.json").write_text("{}")  # TFDS's side files are not records
    splits = load_data(DataConfig(data=str(data)))

    assert (len(splits.train), len(splits.val), len(splits.test)) == (21, 6, 3)
    assert per_class(splits.val) == dict.fromkeys(COLOURS, 2)
    for part in (splits.train, splits.val, splits.test):
        assert_labels_match_pixels(part)


def test_tfds_names_and_a_held_out_val_split(tmp_path):
    data = tmp_path / "data"
    write(data / "colours-train.tfrecord-00000-of-00001", per_class=10)
    write(data / "colours-test.tfrecord-00000-of-00001", per_class=2)
    splits = load_data(DataConfig(data=str(data), val_fraction=0.2))

    assert per_class(splits.train) == dict.fromkeys(COLOURS, 8)
    assert per_class(splits.val) == dict.fromkeys(COLOURS, 2)
    assert len(splits.test) == 6


def test_gzip_compressed_files_are_read(tmp_path):
    plain = write(tmp_path / "plain.tfrecord")
    packed = tmp_path / "data.tfrecord.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    splits = load_data(DataConfig(data=str(packed)))

    assert len(splits.train) + len(splits.val) + len(splits.test) == 18


def test_classes_without_names_are_named_by_their_ids(tmp_path, caplog):
    path = write(tmp_path / "data.tfrecord", ids=(3, 7, 12), names=None)
    with caplog.at_level(logging.INFO, logger="tunewise"):
        splits = load_data(DataConfig(data=str(path)))

    assert splits.classes == ["3", "7", "12"]  # by id, not as strings
    assert "named by their ids: 3, 7, 12" in caplog.text


# --- keys and flags ------------------------------------------------------------------------------


def test_other_keys_are_read_when_the_flags_name_them(tmp_path):
    from tunewise.cli import build_parser, config_from

    path = write(tmp_path / "data.tfrecord", keys=("image", "label", "label_name"))
    args = build_parser().parse_args(["fit", "--data", str(path), "--image-key", "image", "--label-key", "label",
                                      "--class-name-key", "label_name"])
    config = config_from(args, "data", DataConfig)
    assert (config.image_key, config.label_key, config.class_name_key) == ("image", "label", "label_name")

    splits = load_data(config)
    assert splits.classes == list(COLOURS)
    assert_labels_match_pixels(splits.train)


def test_a_missing_key_names_the_key_the_keys_there_and_the_flag(tmp_path):
    path = write(tmp_path / "data.tfrecord", keys=("image", "label", "text"))
    with pytest.raises(DataError) as err:
        load_data(DataConfig(data=str(path)))
    message = str(err.value)
    for words in ("data.tfrecord", "record 0", "'image/encoded'", "'image', 'label', 'text'", "--image-key"):
        assert words in message, message

    with pytest.raises(DataError, match=r"no feature 'image/class/label'.*--label-key"):
        load_data(DataConfig(data=str(path), image_key="image"))


def test_a_feature_of_another_kind_says_what_it_holds(tmp_path):
    path = write(tmp_path / "data.tfrecord", keys=("image/encoded", "image/class/label", "image/class/text"))
    with pytest.raises(DataError, match=r"holds 1 bytes value under 'image/class/text', not one int64 value "
                                        r"\(--label-key"):
        load_data(DataConfig(data=str(path), label_key="image/class/text"))


# --- bad data ------------------------------------------------------------------------------------


def flipped(path: Path, at: int) -> Path:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    return path


def test_a_flipped_byte_fails_the_checksum(tmp_path):
    path = write(tmp_path / "data.tfrecord")
    first = int.from_bytes(path.read_bytes()[:8], "little")
    flipped(path, 16 + first + 16 + 40)  # inside the second record's data
    with pytest.raises(DataError) as err:
        load_data(DataConfig(data=str(path)))
    message = str(err.value)
    for words in (str(path), "record 1", "checksum of its data", "corrupt", "Re-copy or re-write the file"):
        assert words in message, message


def test_a_flipped_length_fails_its_checksum(tmp_path):
    path = flipped(write(tmp_path / "data.tfrecord"), 1)
    with pytest.raises(DataError, match=r"record 0 \(counting from 0\), fails the checksum of its length"):
        load_data(DataConfig(data=str(path)))


def test_a_truncated_file_is_cut_short(tmp_path):
    path = write(tmp_path / "data.tfrecord")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError) as err:
        load_data(DataConfig(data=str(path)))
    message = str(err.value)
    for words in (str(path), "record 17", "cut short", "truncated", "Re-copy or re-write the file"):
        assert words in message, message


def test_a_truncated_gzip_file_is_cut_short(tmp_path):
    path = tmp_path / "data.tfrecord.gz"
    path.write_bytes(gzip.compress(write(tmp_path / "plain.tfrecord").read_bytes())[:-30])
    with pytest.raises(DataError, match="cut short"):
        load_data(DataConfig(data=str(path)))


def test_zlib_compressed_files_are_refused(tmp_path):
    path = tmp_path / "data.tfrecord"
    path.write_bytes(zlib.compress(write(tmp_path / "plain.tfrecord").read_bytes()))
    (tmp_path / "plain.tfrecord").unlink()
    with pytest.raises(DataError, match="ZLIB-compressed.*compression_type='GZIP'"):
        load_data(DataConfig(data=str(path)))


def test_an_undecodable_image_is_skipped_or_refused_under_strict(tmp_path, caplog):
    path = write(tmp_path / "data.tfrecord", per_class=6)
    writer = TFRecordWriter(str(tmp_path / "broken.tfrecord"))
    writer.write({"image/encoded": (b"not an image", "byte"), "image/class/label": (0, "int")})
    writer.close()
    path.write_bytes(path.read_bytes() + (tmp_path / "broken.tfrecord").read_bytes())
    (tmp_path / "broken.tfrecord").unlink()

    with caplog.at_level(logging.WARNING, logger="tunewise"):
        splits = load_data(DataConfig(data=str(path)))
    assert len(splits.train) + len(splits.val) + len(splits.test) == 18
    assert "data.tfrecord: record 18" in caplog.text
    with pytest.raises(DataError, match="record 18.*--strict"):
        load_data(DataConfig(data=str(path), strict=True))


def test_a_class_that_training_lacks_is_an_error(tmp_path):
    write(tmp_path / "data" / "train.tfrecord", ids=(0, 1), names=None)
    write(tmp_path / "data" / "val.tfrecord", ids=(0, 1, 5), names=None)
    with pytest.raises(DataError, match=r"val.tfrecord' has class ids that no training record has: 5 "
                                        r"\(training ids: 0, 1\)"):
        load_data(DataConfig(data=str(tmp_path / "data")))


def test_files_named_for_no_split_beside_split_files_are_an_error(tmp_path):
    write(tmp_path / "data" / "train.tfrecord")
    write(tmp_path / "data" / "extra.tfrecord")
    with pytest.raises(DataError, match=r"named for a split \(train\) and files named for none: extra.tfrecord"):
        load_data(DataConfig(data=str(tmp_path / "data")))
    (tmp_path / "data" / "train.tfrecord").rename(tmp_path / "data" / "val.tfrecord")
    (tmp_path / "data" / "extra.tfrecord").unlink()
    with pytest.raises(DataError, match="val TFRecord files but no training file"):
        load_data(DataConfig(data=str(tmp_path / "data")))


def test_an_empty_file_is_an_error(tmp_path):
    (tmp_path / "data.tfrecord").write_bytes(b"")
    with pytest.raises(DataError, match="data.tfrecord in .* hold no usable images"):
        load_data(DataConfig(data=str(tmp_path / "data.tfrecord")))


def test_a_single_class_is_an_error(tmp_path):
    path = write(tmp_path / "data.tfrecord", ids=(4,), names=None)
    with pytest.raises(DataError, match=r"single class id \(4\).*--label-key"):
        load_data(DataConfig(data=str(path)))


# --- end to end ----------------------------------------------------------------------------------


def test_fit_runs_on_tfrecord_files(tmp_path, tiny_weights):
    data = tmp_path / "data"
    write(data / "train.tfrecord", per_class=8)
    write(data / "val.tfrecord", per_class=3)
    write(data / "test.tfrecord", per_class=2)
    record = tunewise.fit("timm:test_resnet", DataConfig(data=str(data), image_size=32), "linear_probe",
                          train=TrainConfig(epochs=2, batch_size=8, num_workers=0, patience=None,
                                            cache_dir=str(tmp_path / "cache")),
                          weights=tiny_weights, out=tmp_path / "run")

    assert record.classes == list(COLOURS)
    assert record.cached_features  # the features of in-memory images are cached by their bytes
    assert 0 <= record.val["accuracy"] <= 1 and record.test is not None
    assert (tmp_path / "run" / "model.safetensors").is_file()


TENSORFLOW_WRITES = """
import io, sys
import numpy as np
import tensorflow as tf
from PIL import Image

from tunewise.data.tfrecord_files import read_splits  # beside TensorFlow's own tf.train.Example
from tunewise.config import DataConfig

def png(channel):
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[..., channel] = 200
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()

folder, compression = sys.argv[1], sys.argv[2] or None
with tf.io.TFRecordWriter(folder + "/train.tfrecord", options=compression) as writer:
    for i in range(12):
        feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png(i % 3)])),
                   "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 3])),
                   "image/class/text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"rgb"[i % 3:i % 3 + 1]]))}
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
splits = read_splits(__import__("pathlib").Path(folder), DataConfig())
print(len(splits.train) + len(splits.val), splits.classes)
"""


@pytest.mark.slow
@pytest.mark.parametrize("compression", ["", "GZIP"])
def test_files_that_tensorflow_writes_are_read(tmp_path, compression):
    """TensorFlow writes in a subprocess: imported here (pytest.importorskip would), it would bring Keras
    in on its own backend, and tunewise's keras: tests need Keras on torch."""
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed")
    result = subprocess.run([sys.executable, "-c", TENSORFLOW_WRITES, str(tmp_path), compression],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "12 ['r', 'g', 'b']"

    splits = load_data(DataConfig(data=str(tmp_path)))  # and here, without TensorFlow
    assert splits.classes == ["r", "g", "b"]
    assert len(splits.train) + len(splits.val) == 12 and splits.test is None
