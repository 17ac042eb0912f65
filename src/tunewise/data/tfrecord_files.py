"""TFRecord files of tf.train.Example images (tf.data's format), read without TensorFlow.

Each record holds an encoded image (--image-key, default `image/encoded`), its class id (--label-key,
`image/class/label`, one int64) and, optionally, its class name (--class-name-key, `image/class/text`);
without names, the classes are named by their ids. Layouts (`read_splits`):

- one file (`.tfrecord`, `.tfrecords`, `.tfrec`, TFDS's `.tfrecord-00000-of-00004`; `.gz` may follow):
  split stratified into train, val and test, as a folder of class folders is;
- a folder of such files: a file whose name has a split's word (train, val/valid/validation/dev/eval,
  test: `train-00000-of-00004.tfrecord`, `mnist-validation.tfrecord-00000-of-00001`) belongs to that
  split, and a missing val split is held out of train; when no name has one, all the files are one set,
  split as one file is. A folder with TFRecord files in it is read as TFRecords, whatever subfolders it has.

How a file is read: TensorFlow frames every record as its length (8 bytes, little-endian), a masked
CRC-32C of the length, the data, and a masked CRC-32C of the data. Both checksums are compared here
(with google-crc32c): the `tfrecord` package's reader reads them but never compares them, so a
flipped byte passed it. The data is parsed by protobuf as a tf.train.Example whose descriptor is
built here, in a pool of its own: `tfrecord`'s and TensorFlow's example_pb2 both put
`tensorflow.Example` in protobuf's default pool, and either one fails to import beside the other.
GZIP-compressed files are read (found by their first bytes); ZLIB-compressed ones are refused.
The encoded images stay in memory undecoded (about the files' size); each is decoded once here, so
that a broken one is skipped with a warning (or refused under --strict), as a broken image file is.
"""

from __future__ import annotations

import functools
import gzip
import io
import itertools
import logging
import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import google_crc32c
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from tunewise.config import DataConfig
from tunewise.data.base import DataSplits, ImageSet
from tunewise.data.image_folder import hold_out_val, split_three_ways
from tunewise.data.images import PIXEL_LIMIT, Unreadable, bytes_problem
from tunewise.errors import DataError

log = logging.getLogger("tunewise")

NAME = re.compile(r"\.(tfrecords?|tfrec)(-\d+-of-\d+)?(\.gz)?$", re.IGNORECASE)
"""The names of TFRecord files: data.tfrecord, train-00000-of-00004.tfrec, mnist-train.tfrecord-00000-of-00001."""
SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "dev": "val", "eval": "val", "test": "test", "testing": "test"}
"""The words of a file name that put the file in a split."""
FIX = "Re-copy or re-write the file (tf.io.TFRecordWriter), or move it out of the data"
KINDS = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}
"""A Feature's value lists, and what each holds."""
SHOWN = 3
"""How many files an error names (and ten times as many class ids)."""
CHUNK = 1 << 24
"""The most bytes read at once."""


def holds_tfrecords(path: Path) -> bool:
    """Whether `path` is a TFRecord file, or a folder with TFRecord files in it (not in its subfolders)."""
    return _is_tfrecord(path) if path.is_file() else bool(path.is_dir() and _tfrecords_in(path))


def read_splits(path: Path, config: DataConfig) -> DataSplits:
    """The splits of a TFRecord file or folder (see the module's docstring).

    Raises:
        DataError: a record is cut short or fails its checksum, is no tf.train.Example, lacks the image
            or label feature or holds another kind of value there; fewer than 2 classes; a class id in
            val or test that train lacks; files that name no split beside files that do.
    """
    read = {split: _read(files, config) for split, files in _files_by_split(path).items()}
    if None in read:
        return split_three_ways(_image_set(read[None], _classes(read[None], config), path), config)
    classes = _classes(read["train"], config, *read.values())
    sets = {split: _image_set(images, classes, path) for split, images in read.items()}
    if "val" in sets:
        return DataSplits(sets["train"], sets["val"], sets.get("test"), classes.names)
    return hold_out_val(sets["train"], sets.get("test"), config)


# --- files and splits ----------------------------------------------------------------------------


def _is_tfrecord(path: Path) -> bool:
    return bool(NAME.search(path.name)) and not path.name.startswith(".")


def _tfrecords_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and _is_tfrecord(p))


def _split_of(file: Path) -> str | None:
    """The split that the first split word of the file's name names, if any."""
    words = re.split(r"[^a-z]+", file.name.lower())
    return next((SPLIT_WORDS[word] for word in words if word in SPLIT_WORDS), None)


def _files_by_split(path: Path) -> dict[str | None, list[Path]]:
    """{split: its files}, or {None: every file} when no file's name names a split (or one file is given)."""
    if path.is_file():
        return {None: [path]}
    by_split: dict[str | None, list[Path]] = {}
    for file in _tfrecords_in(path):
        by_split.setdefault(_split_of(file), []).append(file)
    named = sorted(split for split in by_split if split is not None)
    if named and None in by_split:
        unnamed = _listed([file.name for file in by_split[None]])
        raise DataError(f"{str(path)!r} has TFRecord files named for a split ({', '.join(named)}) and files named for "
                        f"none: {unnamed}. Name every file train*, val* or test* (train-00000-of-00002.tfrecord), or "
                        "move the others out of the folder.")
    if named and "train" not in by_split:
        raise DataError(f"{str(path)!r} has {' and '.join(named)} TFRecord files but no training file. Add train* "
                        "files (train.tfrecord, train-00000-of-00004.tfrecord), or name the files for no split to "
                        "have them split for you.")
    return by_split


def _listed(items: list[Any], most: int = SHOWN) -> str:
    """The first `most` items, and how many more."""
    shown = [str(item) for item in items[:most]]
    return ", ".join(shown + [f"{len(items) - most} more"] * (len(items) > most))


# --- records -------------------------------------------------------------------------------------


def records(path: Path) -> Iterator[bytes]:
    """The data of each record of the TFRecord file `path`, both checksums checked.

    Raises:
        DataError: the file cannot be read, is cut short, fails a checksum, or is ZLIB-compressed.
    """
    with _open(path) as stream:
        for number in itertools.count():
            header = _read_bytes(stream, 12, path, number)
            if not header:
                return
            if len(header) < 12:
                raise _cut_short(path, number)
            if _masked_crc(header[:8]) != int.from_bytes(header[8:], "little"):
                raise _corrupt(path, number, "length")
            (length,) = struct.unpack("<Q", header[:8])
            data = _read_bytes(stream, length, path, number)
            footer = _read_bytes(stream, 4, path, number)
            if len(data) < length or len(footer) < 4:
                raise _cut_short(path, number)
            if _masked_crc(data) != int.from_bytes(footer, "little"):
                raise _corrupt(path, number, "data")
            yield data


def _masked_crc(data: bytes) -> int:
    """TensorFlow's masked CRC-32C of `data` (rotated right by 15 bits, plus a constant)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _open(path: Path) -> io.BufferedIOBase:
    """`path` opened for reading, through gzip when it is GZIP-compressed: a plain file's first 12 bytes
    are a length and its checksum, a gzip file's first 2 are 1f 8b."""
    try:
        with path.open("rb") as file:
            head = file.read(12)
        plain = len(head) == 12 and _masked_crc(head[:8]) == int.from_bytes(head[8:], "little")
        if not plain and head[:2] == b"\x1f\x8b":
            return gzip.open(path, "rb")
        if not plain and head[:1] == b"\x78" and int.from_bytes(head[:2], "big") % 31 == 0:
            raise DataError(f"{str(path)!r} looks ZLIB-compressed (or its first record is corrupt); tunewise reads "
                            "plain and GZIP-compressed TFRecord files. Write it with compression_type='GZIP' or none.")
        return path.open("rb")
    except OSError as err:
        raise DataError(f"cannot read {str(path)!r}: {err.strerror or err}. Check that it is a readable file.") \
            from None


def _read_bytes(stream: io.BufferedIOBase, size: int, path: Path, number: int) -> bytes:
    """Up to `size` bytes of `stream`, read in chunks: a length in a crafted header allocates no more than
    the file holds. A damaged gzip stream is a DataError."""
    chunks: list[bytes] = []
    try:
        while size > 0 and (chunk := stream.read(min(size, CHUNK))):
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)
    except EOFError:  # gzip's: the compressed stream ends early
        raise _cut_short(path, number) from None
    except (OSError, zlib.error) as err:
        raise DataError(f"cannot decompress {str(path)!r} at record {number}: {err}. The gzip data is damaged. "
                        f"{FIX}.") from None


def _record(path: Path, number: int) -> str:
    """Where a record is, as the errors name it."""
    return f"{str(path)!r}, record {number} (counting from 0),"


def _cut_short(path: Path, number: int) -> DataError:
    return DataError(f"{_record(path, number)} is cut short: the file is truncated, or is not a TFRecord file. {FIX}.")


def _corrupt(path: Path, number: int, part: str) -> DataError:
    return DataError(f"{_record(path, number)} fails the checksum of its {part}: the file is corrupt (its bytes "
                     f"changed after it was written), or is not a TFRecord file. {FIX}.")


# --- examples ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Keys:
    """The features read from each record, and the flags that set them."""

    image: str
    label: str
    name: str

    def flag(self, key: str) -> str:
        return {self.image: "--image-key", self.label: "--label-key"}.get(key, "--class-name-key")


@dataclass(frozen=True)
class _Record:
    """What one record gives: its image, its class id and name, and why the image is unusable (or None)."""

    image: bytes
    class_id: int
    name: str | None
    problem: str | None


@functools.lru_cache(maxsize=256)
def _parsed(path: Path, size: int, mtime_ns: int, keys: _Keys, limit: str | None) -> tuple[_Record, ...]:
    """The records of `path`, each image decoded once; remembered while the file and the pixel limit stay
    the same, since a search reads its data once per trial."""
    found = []
    for number, data in enumerate(records(path)):
        features = _example(data, path, number).features.feature
        image = _value(features, keys.image, "bytes_list", "the encoded images", path, number, keys)
        class_id = _value(features, keys.label, "int64_list", "the class ids", path, number, keys)
        name = None
        if keys.name and keys.name in features:
            name = _value(features, keys.name, "bytes_list", "the class names", path, number, keys)
            name = name.decode(errors="replace")
        found.append(_Record(image, class_id, name, bytes_problem(image)))
    return tuple(found)


def _example(data: bytes, path: Path, number: int) -> Any:
    try:
        return _example_class().FromString(data)
    except DecodeError as err:
        raise DataError(f"{_record(path, number)} is not a tf.train.Example ({err}). tunewise reads TFRecord files "
                        "of tf.train.Example images; write them so, or move the file out of the data.") from None


def _value(features: Any, key: str, kind: str, holds: str, path: Path, number: int, keys: _Keys) -> Any:
    """The one value of feature `key`, a `kind` list; `holds` says what the feature should hold."""
    flag = keys.flag(key)
    if key not in features:
        present = ", ".join(repr(k) for k in sorted(features)) or "none"
        raise DataError(f"{_record(path, number)} has no feature {key!r} ({flag}: {holds}). Its features: "
                        f"{present}. Pass {flag} with the one that holds {holds}.")
    feature = features[key]
    given = next((k for k in KINDS if feature.HasField(k)), None)
    values = getattr(feature, given).value if given else []
    if given != kind or len(values) != 1:
        what = f"{len(values)} {KINDS[given]} value{'s' * (len(values) != 1)}" if given else "no value"
        raise DataError(f"{_record(path, number)} holds {what} under {key!r}, not one {KINDS[kind]} value ({flag}: "
                        f"{holds}). Pass {flag} with the feature that holds {holds}.")
    return values[0]


EXAMPLE_PROTO = {
    "BytesList": [("value", "bytes", True)],
    "FloatList": [("value", "float", True)],
    "Int64List": [("value", "int64", True)],
    "Feature": [("bytes_list", "BytesList", False), ("float_list", "FloatList", False),
                ("int64_list", "Int64List", False)],
    "Features": [("feature", "Features.FeatureEntry", True)],
    "Features.FeatureEntry": [("key", "string", False), ("value", "Feature", False)],  # map<string, Feature>
    "Example": [("features", "Features", False)],
}
"""TensorFlow's feature.proto and example.proto (package tensorflow): each message's fields as (name, type,
repeated), numbered from 1."""


@functools.cache
def _example_class() -> Any:
    """tf.train.Example's message class, built from EXAMPLE_PROTO in a descriptor pool of its own (see the
    module's docstring)."""
    field_type = descriptor_pb2.FieldDescriptorProto
    scalars = {"bytes": field_type.TYPE_BYTES, "float": field_type.TYPE_FLOAT, "int64": field_type.TYPE_INT64,
               "string": field_type.TYPE_STRING}
    proto = descriptor_pb2.FileDescriptorProto(name="tunewise/tf_example.proto", package="tensorflow", syntax="proto3")
    made: dict[str, Any] = {}
    for name, fields in EXAMPLE_PROTO.items():
        outer, _, inner = name.rpartition(".")
        message = made[name] = (made[outer].nested_type if outer else proto.message_type).add(name=inner)
        if name.endswith("Entry"):
            message.options.map_entry = True
        for number, (field_name, kind, repeated) in enumerate(fields, start=1):
            label = field_type.LABEL_REPEATED if repeated else field_type.LABEL_OPTIONAL
            if kind in scalars:
                message.field.add(name=field_name, number=number, label=label, type=scalars[kind])
            else:
                message.field.add(name=field_name, number=number, label=label, type=field_type.TYPE_MESSAGE,
                                  type_name=f".tensorflow.{kind}")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


# --- classes and image sets ----------------------------------------------------------------------


@dataclass
class _Images:
    """The usable images of some files, each with its class id and file; the class names the records give."""

    images: list[bytes] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)


@dataclass
class _Classes:
    """The training class ids, in order, and their names."""

    ids: list[int]
    names: list[str]


def _read(files: list[Path], config: DataConfig) -> _Images:
    """The images of `files`; unusable ones are skipped with one warning (or refused under --strict)."""
    keys = _Keys(config.image_key, config.label_key, config.class_name_key)
    found, unreadable = _Images(), Unreadable(config.strict)
    for file in files:
        stat = file.stat()
        parsed = _parsed(file, stat.st_size, stat.st_mtime_ns, keys, os.environ.get(PIXEL_LIMIT))
        for number, record in enumerate(parsed):
            if record.name is not None:
                _name_class(found.names, record, file, keys)
            if record.problem is not None:
                unreadable.skip(f"{file.name}: record {number}", record.problem)
                continue
            found.images.append(record.image)
            found.ids.append(record.class_id)
            found.files.append(file)
    unreadable.warn(files[0].parent)
    if not found.images:
        raise DataError(f"{_listed([file.name for file in files])} in {str(files[0].parent)!r} hold no usable "
                        "images. Pass TFRecord files of tf.train.Example images.")
    return found


def _name_class(names: dict[int, str], record: _Record, file: Path, keys: _Keys) -> None:
    """Note the record's class name; another name for the same id is an error."""
    assert record.name is not None
    known = names.setdefault(record.class_id, record.name)
    if known != record.name:
        raise DataError(f"class id {record.class_id} is named both {known!r} and {record.name!r} ({str(file)!r}, "
                        f"{keys.name!r}). Give each class id one name, or pass --class-name-key '' to name the "
                        "classes by their ids.")


def _classes(train: _Images, config: DataConfig, *others: _Images) -> _Classes:
    """The class ids of the training images, and their names (given by any split's records, else the ids)."""
    ids = sorted(set(train.ids))
    if len(ids) < 2:
        raise DataError(f"the training records have a single class id ({ids[0]}) under {config.label_key!r}; "
                        "classification needs at least 2 classes. Check --label-key, or add records of other classes.")
    given = {k: v for images in (train, *others) for k, v in images.names.items()}
    names = [given.get(i, str(i)) for i in ids]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise DataError(f"the class names under {config.class_name_key!r} name several class ids: {', '.join(twice)}. "
                        "Give each class one name, or pass --class-name-key '' to name the classes by their ids.")
    unnamed = [str(i) for i in ids if i not in given]
    if unnamed:
        log.info("TFRecord classes without a name under %r (--class-name-key) are named by their ids: %s",
                 config.class_name_key, ", ".join(unnamed))
    return _Classes(ids, names)


def _image_set(images: _Images, classes: _Classes, path: Path) -> ImageSet:
    """`images` as an ImageSet of `classes`; a class id that training lacks is an error."""
    index = {class_id: i for i, class_id in enumerate(classes.ids)}
    unknown = sorted(set(images.ids) - index.keys())
    if unknown:
        file = images.files[images.ids.index(unknown[0])]
        raise DataError(f"{str(file)!r} has class ids that no training record has: {_listed(unknown, 10 * SHOWN)} "
                        f"(training ids: {_listed(classes.ids, 10 * SHOWN)}). Add training records of those classes, "
                        "or remove the others.")
    return ImageSet(items=images.images, labels=[index[i] for i in images.ids], classes=list(classes.names),
                    source=str(path.resolve()))
