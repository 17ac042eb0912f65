"""Detection data (COCO JSON, Pascal VOC XML) and segmentation data (image and mask folders, VOC) read from files.

Boxes come out as x1 y1 x2 y2 in pixel-edge coordinates (0 is the left edge of the first pixel, x2 the right
edge of the last pixel covered), classes as indices 0..C-1. Masks stay file paths and are decoded per item.
Loading decodes every image and mask once, so that a broken file is skipped (or refused under --strict) then
rather than mid-run.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from tunewise.config import DataConfig
from tunewise.data.base import DataSplits
from tunewise.data.dense import IGNORE_INDEX, DetectionSet, SegmentationSet, read_mask
from tunewise.data.images import IMAGE_SUFFIXES, Unreadable
from tunewise.errors import DataError

log = logging.getLogger("tunewise")

SPLITS = ("train", "val", "test")
BOX_TOLERANCE = 1.0
"""Boxes may leave their image by this many pixels (rounding in exports); they are clipped silently."""
VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]
"""Pascal VOC's segmentation classes: mask value i is VOC_CLASSES[i] (255 marks object borders)."""


# --- shared: records, splits, class lists ----------------------------------------------------------------


@dataclass
class _Boxed:
    """One image and its boxes, before the images of a split become a DetectionSet."""

    path: Path
    name: str
    boxes: np.ndarray  # (N, 4) float32, x1 y1 x2 y2
    classes: np.ndarray  # (N,) int64


@dataclass
class _Pair:
    """One image and its mask file."""

    image: Path
    mask: Path


@dataclass
class _Tally:
    """Checks boxes against their image and counts what one summary line reports.

    Without `clip`, a box outside its image or without area is an error; with it, boxes are clipped to the
    image and those left without area dropped. Images that do not decode are left out by `unreadable`.
    """

    clip: bool
    unreadable: Unreadable
    clipped: int = 0
    dropped: int = 0
    images: int = 0
    negatives: int = 0

    def check(self, boxes: np.ndarray, classes: np.ndarray, size: tuple[int, int],
              where: str) -> tuple[np.ndarray, np.ndarray]:
        """Shape: boxes (N, 4), classes (N,) -> the kept boxes (M, 4) float32 and classes (M,) int64."""
        width, height = size
        flat = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        outside = ((boxes[:, :2] < -BOX_TOLERANCE).any(axis=1) | (boxes[:, 2] > width + BOX_TOLERANCE)
                   | (boxes[:, 3] > height + BOX_TOLERANCE))
        if not self.clip and flat.any():
            raise DataError(f"image {where} has a box with no area: {_show(boxes[flat][0])} (x1 y1 x2 y2 needs "
                            "x2 > x1 and y2 > y1). Fix or remove the annotation, or set --clip-boxes to drop such "
                            "boxes with a warning.")
        if not self.clip and outside.any():
            raise DataError(f"image {where} has a box outside the image: {_show(boxes[outside][0])} (x1 y1 x2 y2) "
                            f"in a {width}x{height} image. Fix the annotation, or set --clip-boxes to clip boxes "
                            "to their image with a warning.")
        fixed = np.clip(boxes, 0, np.array([width, height, width, height], dtype=np.float32)).astype(np.float32)
        keep = (fixed[:, 2] > fixed[:, 0]) & (fixed[:, 3] > fixed[:, 1])
        self.clipped += int((outside & keep).sum())
        self.dropped += int((~keep).sum())
        self.images += 1
        self.negatives += int(not keep.any())
        return fixed[keep].reshape(-1, 4), classes[keep].astype(np.int64)

    def report(self, source: Path) -> None:
        self.unreadable.warn(source)
        if self.clipped or self.dropped:
            log.warning("%s: clipped %d boxes to their image and dropped %d left without area (--clip-boxes)",
                        source, self.clipped, self.dropped)
        if self.negatives:
            log.info("%s: %d of %d images have no boxes; they are kept as negative examples",
                     source, self.negatives, self.images)


def _show(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in box) + "]"


def _split(parts: dict[str, list], config: DataConfig, whole: bool) -> tuple[list, list, list | None]:
    """Train, val and test records: as given, or val (and, for `whole` data, test) drawn at random from
    train with config.val_fraction, config.test_fraction and config.seed. Not stratified: an image holds
    many classes."""
    if "val" in parts:
        return parts["train"], parts["val"], parts.get("test")
    records = parts["train"]
    n = len(records)
    n_val = round(n * config.val_fraction)
    n_test = min(round(n * config.test_fraction) if whole else 0, max(0, n - 1 - n_val))
    order = np.random.default_rng(config.seed).permutation(n)
    pick = lambda idx: [records[i] for i in sorted(idx.tolist())]  # noqa: E731
    train, val, test = pick(order[n_val + n_test:]), pick(order[:n_val]), pick(order[n_val:n_val + n_test])
    return train, val, ((test or None) if whole else parts.get("test"))


def _classes_file(root: Path) -> list[str] | None:
    """The class names in root/classes.txt (one a line), or None when there is no such file."""
    path = root / "classes.txt"
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise DataError(f"{str(path)!r} is empty. Write one class name a line, or remove the file to take the "
                        "names from the annotations.")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{str(path)!r} names {', '.join(map(repr, repeated))} more than once. Name each class "
                        "once.")
    return names


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image's header."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"cannot read image {str(path)!r}: {err}. Remove or replace the file.") from None


def _find_image(folder: Path, stem: str) -> Path | None:
    """folder/stem with an image suffix (.jpg first), or None."""
    for suffix in (".jpg", *sorted(IMAGE_SUFFIXES - {".jpg"})):
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def _listed_ids(folder: Path) -> dict[str, list[str]]:
    """The ids in folder/{train,val,test}.txt (VOC's ImageSets), first word of each line."""
    return {split: [line.split()[0] for line in (folder / f"{split}.txt").read_text().splitlines() if line.split()]
            for split in SPLITS if (folder / f"{split}.txt").is_file()}


# --- detection --------------------------------------------------------------------------------------------


def read_detection_data(path: Path, config: DataConfig) -> DataSplits:
    """Read images with boxes: a COCO JSON file, a folder of COCO split files, or a Pascal VOC folder.

    COCO: `path` is a .json file (split at random), or a folder holding train.json, val.json, test.json
    or annotations/instances_{train,val,test}*.json; image file names are relative to the JSON's folder
    or an images/ folder beside it. VOC: a folder with Annotations/*.xml and JPEGImages/, split by
    ImageSets/Main/{train,val,test}.txt when present.

    Raises:
        DataError: unreadable or malformed annotations, missing images, unknown classes, boxes outside
            their image or without area (unless config.clip_boxes), or no layout of the above.
    """
    tally = _Tally(config.clip_boxes, Unreadable(config.strict))
    if path.is_file() and path.suffix.lower() == ".json":
        records, categories = _read_coco(path, tally, None)
        parts, classes, whole = {"train": records}, [categories[c] for c in sorted(categories)], True
    elif path.is_dir() and _coco_files(path):
        parts, classes, whole = _read_coco_folder(path, tally)
    elif path.is_dir() and (path / "Annotations").is_dir():
        parts, classes, whole = _read_voc_detection(path, tally)
    else:
        raise DataError(f"data {str(path)!r} is not detection data. Pass a COCO JSON file, a folder with "
                        "train.json/val.json[/test.json] or annotations/instances_train*.json, or a Pascal VOC "
                        "folder (Annotations/*.xml and JPEGImages/).")
    tally.report(path)
    train, val, test = _split(parts, config, whole)
    make = lambda records: DetectionSet(  # noqa: E731
        items=[r.path for r in records], boxes=[r.boxes for r in records], box_classes=[r.classes for r in records],
        classes=list(classes), source=str(path.resolve()), names=[r.name for r in records])
    return DataSplits(make(train), make(val), None if test is None else make(test), list(classes))


def _coco_files(root: Path) -> dict[str, Path]:
    """The COCO file of each split in `root`: {split}.json, else annotations/instances_{split}*.json."""
    found = {}
    for split in SPLITS:
        matches = sorted((root / "annotations").glob(f"instances_{split}*.json"))
        if (root / f"{split}.json").is_file():
            found[split] = root / f"{split}.json"
        elif matches:
            found[split] = matches[0]
    return found


def _read_coco_folder(root: Path, tally: _Tally) -> tuple[dict[str, list[_Boxed]], list[str], bool]:
    files = _coco_files(root)
    if "train" not in files:
        raise DataError(f"{str(root)!r} has {', '.join(str(p.name) for p in files.values())} but no train.json "
                        "(or annotations/instances_train*.json). Add the training annotations.")
    parts: dict[str, list[_Boxed]] = {}
    categories: dict | None = None
    for split, file in files.items():
        parts[split], categories = _read_coco(file, tally, categories)
    assert categories is not None, "train is among the files"
    return parts, [categories[c] for c in sorted(categories)], False


def _read_json(path: Path) -> dict:
    """A COCO file's content, checked for the lists every reader needs."""
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise DataError(f"annotation file {str(path)!r} is empty. Export the COCO JSON again or remove the file.")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"annotation file {str(path)!r} is not valid JSON ({err}). Fix the file or export it "
                        "again.") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories")):
        raise DataError(f"annotation file {str(path)!r} is not COCO JSON: it needs 'images', 'annotations' and "
                        "'categories' lists. Export the annotations in COCO format.")
    return data


def _coco_categories(data: dict, path: Path) -> dict:
    """{category id: name}, in the file's order."""
    try:
        categories = {c["id"]: str(c["name"]) for c in data["categories"]}
    except (KeyError, TypeError):
        raise DataError(f"annotation file {str(path)!r} has a category without 'id' and 'name'. Give each "
                        "category both.") from None
    if not categories:
        raise DataError(f"annotation file {str(path)!r} lists no categories. Add the 'categories' of the boxes.")
    return categories


def _read_coco(path: Path, tally: _Tally, categories: dict | None) -> tuple[list[_Boxed], dict]:
    """The images of one COCO file, classes numbered by sorted category id.

    Args:
        categories: the training file's {id: name}, when reading val/test: theirs must agree.
    """
    data = _read_json(path)
    own = _coco_categories(data, path)
    if categories is None:
        categories = own
    for cid, name in own.items():
        if categories.get(cid) != name:
            theirs = f"calls it {categories[cid]!r}" if cid in categories else "does not have it"
            raise DataError(f"annotation file {str(path)!r} has category id {cid!r} = {name!r}, but the training "
                            f"file {theirs}. Give every split the same categories.")
    index = {cid: i for i, cid in enumerate(sorted(categories))}
    images = _coco_images(data, path)
    boxes: dict[object, list[tuple[list[float], int]]] = {}  # image id -> (box, class index)
    for ann in data.get("annotations") or []:
        if ann.get("iscrowd", 0):
            continue
        entry = images.get(ann.get("image_id"))
        if entry is None:
            raise DataError(f"annotation {ann.get('id')!r} in {str(path)!r} refers to image id "
                            f"{ann.get('image_id')!r}, which its 'images' do not list. Fix the image_id.")
        if ann.get("category_id") not in index:
            raise DataError(f"image {entry['file_name']!r} in {str(path)!r} has a box of category id "
                            f"{ann.get('category_id')!r}, which is not in the categories "
                            f"({', '.join(map(str, sorted(index)))}). Add the category or fix the annotation.")
        boxes.setdefault(entry["id"], []).append((_coco_box(ann, entry, path), index[ann["category_id"]]))
    folders = _coco_image_folders(path)
    records = (_coco_record(entry, boxes.get(key, []), folders, path, tally) for key, entry in images.items())
    return [r for r in records if r is not None], categories


def _coco_images(data: dict, path: Path) -> dict:
    """{image id: image entry}."""
    images = {}
    for entry in data["images"]:
        if not isinstance(entry, dict) or "id" not in entry or not entry.get("file_name"):
            raise DataError(f"annotation file {str(path)!r} has an image without 'id' and 'file_name' ({entry!r}). "
                            "Give each image both.")
        images[entry["id"]] = entry
    if not images:
        raise DataError(f"annotation file {str(path)!r} lists no images. Add them to its 'images'.")
    return images


def _coco_box(ann: dict, entry: dict, path: Path) -> list[float]:
    """COCO's [x, y, width, height] as [x1, y1, x2, y2]."""
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)
            and np.isfinite(bbox).all()):
        raise DataError(f"image {entry['file_name']!r} in {str(path)!r} has an annotation ({ann.get('id')!r}) "
                        f"whose bbox is {bbox!r}; COCO wants [x, y, width, height] in pixels. Fix the annotation.")
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


def _coco_image_folders(path: Path) -> list[Path]:
    """Where a COCO file's images may be: its folder, images/ beside it, or (for annotations/instances_X.json)
    the folder above, its images/, and X/ in either."""
    folders = [path.parent, path.parent / "images", path.parent / "images" / path.stem]
    if path.parent.name == "annotations":
        root, split = path.parent.parent, path.stem.removeprefix("instances_")
        folders += [root, root / "images", root / split, root / "images" / split]
    return folders


def _coco_record(entry: dict, found: list, folders: list[Path], path: Path, tally: _Tally) -> _Boxed | None:
    """The image's record, or None when it does not decode (left out by `tally.unreadable`)."""
    name = str(entry["file_name"])
    image = next((folder / name for folder in folders if (folder / name).is_file()), None)
    if image is None:
        raise DataError(f"image {name!r} listed in {str(path)!r} does not exist in "
                        f"{', '.join(repr(str(f)) for f in folders[:2])}. Put the images beside the JSON file or "
                        "in an images/ folder next to it, or fix its file_name.")
    if not tally.unreadable.usable(image):
        return None
    width, height = entry.get("width"), entry.get("height")
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        size = (width, height)
    else:
        size = _image_size(image)
    boxes = np.array([b for b, _ in found], dtype=np.float32).reshape(-1, 4)
    classes = np.array([c for _, c in found], dtype=np.int64)
    boxes, classes = tally.check(boxes, classes, size, f"{name!r} in {str(path)!r}")
    return _Boxed(image, name, boxes, classes)


@dataclass
class _VocObjects:
    """One VOC annotation file, its class names not yet numbered."""

    image: Path
    size: tuple[int, int]
    names: list[str]
    boxes: list[list[float]]  # x1 y1 x2 y2, already 0-based pixel edges
    xml: Path


def _read_voc_detection(root: Path, tally: _Tally) -> tuple[dict[str, list[_Boxed]], list[str], bool]:
    """Annotations/*.xml (or the ids in ImageSets/Main/*.txt); classes from classes.txt or the names used."""
    listed = _listed_ids(root / "ImageSets" / "Main")
    if listed and "train" not in listed:
        raise DataError(f"{str(root / 'ImageSets' / 'Main')!r} has {', '.join(listed)}.txt but no train.txt. "
                        "Add the list of training ids, or remove the folder to split at random.")
    if listed:
        files = {split: [_voc_xml(root, i, root / "ImageSets" / "Main" / f"{split}.txt") for i in ids]
                 for split, ids in listed.items()}
    else:
        files = {"train": sorted((root / "Annotations").glob("*.xml"))}
        if not files["train"]:
            raise DataError(f"{str(root / 'Annotations')!r} holds no .xml files. Add one VOC annotation per "
                            "image.")
    parsed = {split: [o for xml in xmls if (o := _parse_voc(root, xml, tally.unreadable))]
              for split, xmls in files.items()}
    classes = _classes_file(root) or sorted({n for objs in parsed.values() for o in objs for n in o.names})
    if not classes:
        raise DataError(f"the annotations in {str(root)!r} hold no objects and there is no classes.txt. Add "
                        "boxes, or list the classes in classes.txt.")
    parts = {split: [_voc_record(o, classes, root, tally) for o in objs] for split, objs in parsed.items()}
    return parts, classes, not listed


def _voc_xml(root: Path, image_id: str, listing: Path) -> Path:
    xml = root / "Annotations" / f"{image_id}.xml"
    if not xml.is_file():
        raise DataError(f"{str(listing)!r} lists {image_id!r} but {str(xml)!r} does not exist. Add the annotation "
                        "or remove the id from the list.")
    return xml


def _parse_voc(root: Path, xml: Path, unreadable: Unreadable) -> _VocObjects | None:
    """The annotation's objects, or None when its image does not decode (left out by `unreadable`)."""
    try:
        tree = ET.parse(xml).getroot()
    except ET.ParseError as err:
        raise DataError(f"annotation file {str(xml)!r} is not valid XML ({err}). Fix the file or export it "
                        "again.") from None
    filename = (tree.findtext("filename") or "").strip()
    image = (root / "JPEGImages" / filename) if filename else None
    if image is None or not image.is_file():
        image = _find_image(root / "JPEGImages", xml.stem)
    if image is None:
        raise DataError(f"the image of {str(xml)!r} ({filename or xml.stem!r}) does not exist in "
                        f"{str(root / 'JPEGImages')!r}. Add the image or remove the annotation.")
    if not unreadable.usable(image):
        return None
    names, boxes = [], []
    for obj in tree.findall("object"):  # difficult objects are kept
        name, box = (obj.findtext("name") or "").strip(), obj.find("bndbox")
        try:
            corners = ([float(box.findtext(k) or "") for k in ("xmin", "ymin", "xmax", "ymax")]
                       if box is not None else [])
        except ValueError:  # a missing or empty coordinate reads as "", not a number
            corners = []
        if not name or len(corners) != 4 or not np.isfinite(corners).all():
            raise DataError(f"annotation file {str(xml)!r} has an object without a <name> and a <bndbox> of "
                            "numbers (xmin ymin xmax ymax). Fix the object.")
        # VOC counts pixels from 1 and includes both ends: pixels xmin..xmax span the edges xmin-1 to xmax
        # (the convention of the VOC devkit, Detectron and mmdetection).
        xmin, ymin, xmax, ymax = corners
        names.append(name)
        boxes.append([xmin - 1, ymin - 1, xmax, ymax])
    return _VocObjects(image, _voc_size(tree, image), names, boxes, xml)


def _voc_size(tree: ET.Element, image: Path) -> tuple[int, int]:
    """(width, height) from <size>, or from the image when <size> is missing or zero."""
    try:
        width, height = int(tree.findtext("size/width") or ""), int(tree.findtext("size/height") or "")
    except ValueError:  # missing or empty reads as "", not a number
        return _image_size(image)
    return (width, height) if width > 0 and height > 0 else _image_size(image)


def _voc_record(objects: _VocObjects, classes: list[str], root: Path, tally: _Tally) -> _Boxed:
    unknown = [n for n in objects.names if n not in classes]
    if unknown:
        raise DataError(f"image {objects.image.name!r} ({str(objects.xml)!r}) has an object of class "
                        f"{unknown[0]!r}, which {str(root / 'classes.txt')!r} does not list. Add the class to "
                        "classes.txt or fix the annotation.")
    boxes = np.array(objects.boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.array([classes.index(n) for n in objects.names], dtype=np.int64)
    boxes, labels = tally.check(boxes, labels, objects.size, f"{objects.image.name!r} ({str(objects.xml)!r})")
    return _Boxed(objects.image, objects.image.name, boxes, labels)


# --- segmentation -----------------------------------------------------------------------------------------


def read_segmentation_data(path: Path, config: DataConfig) -> DataSplits:
    """Read images with masks: images/ and masks/ (same file stem, masks PNG), train/ val/ [test/] of
    those, or a VOC folder (JPEGImages/, SegmentationClass/, optional ImageSets/Segmentation/*.txt).

    Class names come from classes.txt, else VOC's 21 for a VOC folder, else class0..classK with K the
    largest mask value found (255, ignored, aside): only that last case reads the masks' pixels.

    Raises:
        DataError: an image without a mask (or a listed id without its image), a mask of another size than
            its image or not of class indices, fewer than 2 classes, or no layout of the above.
    """
    if not path.is_dir():
        raise DataError(f"data {str(path)!r} is not a folder. Pass a folder with images/ and masks/, train/ "
                        "val/ [test/] folders of those, or a VOC folder (JPEGImages/, SegmentationClass/).")
    voc = False
    if (path / "train").is_dir():
        parts = {s: _read_pairs(path / s) for s in SPLITS if (path / s).is_dir()}
        whole = False
    elif (path / "images").is_dir():
        parts, whole = {"train": _read_pairs(path)}, True
    elif (path / "JPEGImages").is_dir() and (path / "SegmentationClass").is_dir():
        parts, whole = _read_voc_pairs(path)
        voc = True
    else:
        raise DataError(f"data {str(path)!r} holds no segmentation layout. Give it images/ and masks/ (a PNG mask "
                        "per image, same file stem), train/ val/ [test/] folders of those, or VOC's JPEGImages/ "
                        "and SegmentationClass/.")
    unreadable = Unreadable(config.strict)
    parts = {split: [p for p in pairs if unreadable.usable(p.image) and unreadable.usable(p.mask, convert=False)]
             for split, pairs in parts.items()}
    unreadable.warn(path)
    for pairs in parts.values():
        for pair in pairs:
            _check_pair(pair)
    classes = _segmentation_classes(path, [p for pairs in parts.values() for p in pairs], voc)
    train, val, test = _split(parts, config, whole)
    make = lambda pairs: SegmentationSet(  # noqa: E731
        items=[p.image for p in pairs], masks=[p.mask for p in pairs], classes=list(classes),
        source=str(path.resolve()), names=[p.image.name for p in pairs])
    return DataSplits(make(train), make(val), None if test is None else make(test), list(classes))


def _read_pairs(folder: Path) -> list[_Pair]:
    """folder/images/* with folder/masks/<stem>.png each."""
    images_dir, masks_dir = folder / "images", folder / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise DataError(f"{str(folder)!r} needs both images/ and masks/ folders. Add the missing one.")
    images = sorted(p for p in images_dir.iterdir()
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not images:
        raise DataError(f"{str(images_dir)!r} has no images ({', '.join(sorted(IMAGE_SUFFIXES))}). Add images.")
    pairs = []
    for image in images:
        mask = masks_dir / f"{image.stem}.png"
        if not mask.is_file():
            raise DataError(f"image {str(image)!r} has no mask: {str(mask)!r} does not exist. Give every image a "
                            "PNG mask of the same file stem, or remove the image.")
        pairs.append(_Pair(image, mask))
    return pairs


def _read_voc_pairs(root: Path) -> tuple[dict[str, list[_Pair]], bool]:
    """The pairs of each listed split, or all masks as one split (True: split at random)."""
    listed = _listed_ids(root / "ImageSets" / "Segmentation")
    whole = not listed
    if listed and "train" not in listed:
        raise DataError(f"{str(root / 'ImageSets' / 'Segmentation')!r} has {', '.join(listed)}.txt but no "
                        "train.txt. Add the list of training ids, or remove the folder to split at random.")
    if not listed:
        listed = {"train": sorted(p.stem for p in (root / "SegmentationClass").glob("*.png"))}
        if not listed["train"]:
            raise DataError(f"{str(root / 'SegmentationClass')!r} holds no PNG masks. Add one mask per image.")
    return {split: [_voc_pair(root, i) for i in ids] for split, ids in listed.items()}, whole


def _voc_pair(root: Path, image_id: str) -> _Pair:
    image = _find_image(root / "JPEGImages", image_id)
    if image is None:
        raise DataError(f"image {image_id!r} does not exist in {str(root / 'JPEGImages')!r}. Add the image or "
                        "remove its id and mask.")
    mask = root / "SegmentationClass" / f"{image_id}.png"
    if not mask.is_file():
        raise DataError(f"image {str(image)!r} has no mask: {str(mask)!r} does not exist. Add the mask or remove "
                        "the id from the list.")
    return _Pair(image, mask)


def _check_pair(pair: _Pair) -> None:
    """The mask is a P or L image of its image's size (headers only)."""
    image_size = _image_size(pair.image)
    try:
        with Image.open(pair.mask) as mask:
            mask_size, mode = mask.size, mask.mode
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"cannot read mask {str(pair.mask)!r}: {err}. Remove or replace the file.") from None
    if mode not in ("P", "L"):
        raise DataError(f"mask {str(pair.mask)!r} is a {mode} image; a mask holds one class index per pixel. "
                        "Save it as a palette (P) or grayscale (L) PNG of indices.")
    if mask_size != image_size:
        raise DataError(f"mask {str(pair.mask)!r} is {mask_size[0]}x{mask_size[1]} pixels but its image "
                        f"{str(pair.image)!r} is {image_size[0]}x{image_size[1]}. Give every image a mask of its "
                        "own size.")


def _segmentation_classes(root: Path, pairs: Sequence[_Pair], voc: bool) -> list[str]:
    classes = _classes_file(root) or (list(VOC_CLASSES) if voc else None)
    if classes is None:
        top = max(_largest_index(p.mask) for p in pairs)
        classes = [f"class{i}" for i in range(top + 1)]
    if len(classes) < 2:
        raise DataError(f"the masks in {str(root)!r} hold a single class ({classes[0]!r}); segmentation needs "
                        "at least 2 (class 0 is usually the background). Add labelled masks or a classes.txt.")
    return classes


def _largest_index(mask: Path) -> int:
    values = read_mask(mask)
    values = values[values != IGNORE_INDEX]
    return int(values.max()) if values.size else 0
