"""Detection and segmentation data: COCO and VOC readers, mask folders, bad input, the generated demo sets."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tunewise.config import DataConfig
from tunewise.data import load_data
from tunewise.data.dense import DetectionSet, SegmentationSet, read_mask
from tunewise.data.dense_demo import DEMO_CLASSES, DEMO_SIZES, demo_canvases, generate_canvases, item_pools
from tunewise.data.dense_files import VOC_CLASSES, read_detection_data, read_segmentation_data
from tunewise.data.torchvision_sets import DEBIAN_FASHION_MNIST
from tunewise.errors import DataError

SIZE = (40, 30)  # width, height of every test image


def _image(path: Path, size: tuple[int, int] = SIZE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 30, 200)).save(path)
    return path


def _by_name(splits) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{image name: (boxes, classes)} over all splits."""
    return {part.name(i): (part.boxes[i], part.box_classes[i])
            for part in splits.named().values() for i in range(len(part))}


# --- COCO ------------------------------------------------------------------------------------------------


def _coco(images: list[str], boxes: dict[str, list[tuple[int, list[float]]]], categories=((7, "dog"), (3, "cat")),
          size=SIZE) -> dict:
    """A COCO dict: `boxes` maps a file name to (category id, [x, y, w, h]) pairs."""
    anns = [{"id": len(images) * 10 + k, "image_id": i, "category_id": cid, "bbox": bbox, "iscrowd": 0}
            for i, name in enumerate(images) for k, (cid, bbox) in enumerate(boxes.get(name, []))]
    entries = [{"id": i, "file_name": name, "width": size[0], "height": size[1]} for i, name in enumerate(images)]
    return {"images": entries, "annotations": anns, "categories": [{"id": c, "name": n} for c, n in categories]}


def _write_coco(folder: Path, name: str, data: dict, image_dir: str = "images") -> Path:
    for entry in data["images"]:
        _image(folder / image_dir / entry["file_name"])
    path = folder / name
    path.write_text(json.dumps(data))
    return path


COCO_BOXES = {"a.png": [(7, [1.5, 2, 10, 20]), (3, [0, 0, 40, 30])], "b.png": [(3, [30, 5, 9.5, 4])]}


def test_coco_folder_round_trip_maps_category_ids_in_sorted_order(tmp_path):
    _write_coco(tmp_path, "train.json", _coco(["a.png", "b.png"], COCO_BOXES))
    _write_coco(tmp_path, "val.json", _coco(["c.png"], {"c.png": [(7, [5, 5, 5, 5])]}))
    splits = read_detection_data(tmp_path, DataConfig(data=str(tmp_path)))
    assert splits.classes == ["cat", "dog"]  # id 3 before id 7
    assert isinstance(splits.train, DetectionSet) and splits.test is None
    assert [splits.train.name(i) for i in range(2)] == ["a.png", "b.png"]
    found = _by_name(splits)
    np.testing.assert_array_equal(found["a.png"][0], [[1.5, 2, 11.5, 22], [0, 0, 40, 30]])
    np.testing.assert_array_equal(found["a.png"][1], [1, 0])
    np.testing.assert_array_equal(found["b.png"][0], [[30, 5, 39.5, 9]])
    np.testing.assert_array_equal(found["c.png"][1], [1])
    assert found["a.png"][0].dtype == np.float32 and found["a.png"][1].dtype == np.int64
    image, target = splits.train[0]
    assert image.size == SIZE and target["boxes"].shape == (2, 4)


def test_coco_file_is_split_and_crowd_boxes_skipped(tmp_path):
    names = [f"{i}.png" for i in range(10)]
    data = _coco(names, {n: [(3, [1, 1, 5, 5])] for n in names})
    data["annotations"].append({"id": 999, "image_id": 0, "category_id": 7, "bbox": [0, 0, 2, 2], "iscrowd": 1})
    path = _write_coco(tmp_path, "boxes.json", data, image_dir=".")
    splits = read_detection_data(path, DataConfig(data=str(path), val_fraction=0.2, test_fraction=0.2, seed=1))
    assert [len(p) for p in splits.named().values()] == [6, 2, 2]
    assert sorted(n for p in splits.named().values() for n in p.names) == sorted(names)
    assert all(len(b) == 1 for b, _ in _by_name(splits).values())


def test_coco_annotations_folder_finds_images_by_split_name(tmp_path):
    _write_coco(tmp_path / "annotations", "instances_train2017.json", _coco(["a.png", "b.png"], COCO_BOXES),
                image_dir="../train2017")
    _write_coco(tmp_path / "annotations", "instances_val2017.json", _coco(["c.png"], {}), image_dir="../val2017")
    splits = load_data(DataConfig(data=str(tmp_path)), "object_detection")
    assert splits.train.items[0] == tmp_path / "train2017" / "a.png"
    assert len(splits.val) == 1


# --- Pascal VOC ------------------------------------------------------------------------------------------


def _voc_xml(objects: list[tuple[str, list[float]]], filename: str | None = None, size=SIZE) -> str:
    parts = [f"<annotation><filename>{filename}</filename>" if filename else "<annotation>",
             f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"]
    for k, (name, (x1, y1, x2, y2)) in enumerate(objects):
        parts.append(f"<object><name>{name}</name><difficult>{k % 2}</difficult><bndbox><xmin>{x1}</xmin>"
                     f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>"


def _write_voc(root: Path, annotations: dict[str, list], lists: dict[str, list[str]] | None = None) -> Path:
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    for stem, objects in annotations.items():
        _image(root / "JPEGImages" / f"{stem}.jpg")
        (root / "Annotations" / f"{stem}.xml").write_text(_voc_xml(objects, f"{stem}.jpg"))
    for split, ids in (lists or {}).items():
        (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def test_voc_round_trip_converts_one_based_corners(tmp_path):
    _write_voc(tmp_path, {"000001": [("person", [11, 21, 30, 30]), ("cat", [1, 1, 40, 30])],
                          "000002": [("cat", [5, 6, 7, 8])]},
               {"train": ["000001"], "val": ["000002"]})
    splits = read_detection_data(tmp_path, DataConfig(data=str(tmp_path)))
    assert splits.classes == ["cat", "person"]
    boxes, classes = splits.train.boxes[0], splits.train.box_classes[0]
    # VOC pixel 11 (1-based) starts at edge 10; xmax 30 ends at edge 30; the whole image is [0, 0, 40, 30]
    np.testing.assert_array_equal(boxes, [[10, 20, 30, 30], [0, 0, 40, 30]])
    np.testing.assert_array_equal(classes, [1, 0])
    np.testing.assert_array_equal(splits.val.boxes[0], [[4, 5, 7, 8]])
    assert splits.train.names == ["000001.jpg"] and splits.test is None


def test_voc_classes_txt_sets_the_order_and_unlisted_ids_split_at_random(tmp_path):
    _write_voc(tmp_path, {f"{i:03d}": [("cat", [2, 2, 9, 9])] for i in range(8)})
    (tmp_path / "classes.txt").write_text("person\ncat\n\n")
    splits = read_detection_data(tmp_path, DataConfig(data=str(tmp_path), val_fraction=0.25, test_fraction=0.25))
    assert splits.classes == ["person", "cat"]
    assert [len(p) for p in splits.named().values()] == [4, 2, 2]
    assert all(c.tolist() == [1] for p in splits.named().values() for c in p.box_classes)


# --- segmentation ----------------------------------------------------------------------------------------


MASK = np.array([[0, 0, 1, 1], [2, 2, 255, 1], [0, 3, 3, 0]], dtype=np.uint8)  # (3, 4)


def _write_mask(path: Path, mask: np.ndarray = MASK, mode: str = "L") -> Path:
    """A grayscale PNG of the indices, or a palette PNG whose colours are unlike the indices."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.frombytes(mode, (mask.shape[1], mask.shape[0]), mask.tobytes())
    if mode == "P":
        image.putpalette([v for i in range(256) for v in (255 - i, (7 * i) % 256, 128)])
    image.save(path)
    return path


def test_palette_and_grayscale_masks_read_to_the_same_indices(tmp_path):
    grey, palette = _write_mask(tmp_path / "l.png"), _write_mask(tmp_path / "p.png", mode="P")
    with Image.open(palette) as opened:
        assert opened.mode == "P"
    np.testing.assert_array_equal(read_mask(grey), MASK)
    np.testing.assert_array_equal(read_mask(palette), MASK)


def _write_pairs(folder: Path, stems: list[str], mode: str = "L") -> Path:
    for stem in stems:
        _image(folder / "images" / f"{stem}.jpg", (4, 3))
        _write_mask(folder / "masks" / f"{stem}.png", mode=mode)
    return folder


def test_mask_folders_read_with_class_count_from_the_largest_index(tmp_path):
    _write_pairs(tmp_path / "train", ["a", "b", "c"], mode="P")
    _write_pairs(tmp_path / "val", ["d"])
    splits = read_segmentation_data(tmp_path, DataConfig(data=str(tmp_path)))
    assert splits.classes == ["class0", "class1", "class2", "class3"]  # 255 is ignored, not a class
    assert isinstance(splits.train, SegmentationSet) and len(splits.train) == 3 and len(splits.val) == 1
    image, mask = splits.val[0]
    assert image.size == (4, 3)
    np.testing.assert_array_equal(mask.numpy(), MASK)


def test_mask_folder_with_classes_txt_is_split_at_random(tmp_path):
    _write_pairs(tmp_path, [f"{i}" for i in range(10)])
    (tmp_path / "classes.txt").write_text("sky\nroad\ncar\nperson\ntree\n")
    splits = load_data(DataConfig(data=str(tmp_path), val_fraction=0.2, test_fraction=0.1), "semantic_segmentation")
    assert splits.classes == ["sky", "road", "car", "person", "tree"]
    assert [len(p) for p in splits.named().values()] == [7, 2, 1]


def test_voc_segmentation_folder_takes_the_voc_classes(tmp_path):
    for stem in ("x", "y"):
        _image(tmp_path / "JPEGImages" / f"{stem}.jpg", (4, 3))
        _write_mask(tmp_path / "SegmentationClass" / f"{stem}.png", mode="P")
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "train.txt").write_text("x\n")
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("y\n")
    splits = read_segmentation_data(tmp_path, DataConfig(data=str(tmp_path)))
    assert splits.classes == VOC_CLASSES and len(VOC_CLASSES) == 21
    assert splits.train.names == ["x.jpg"] and splits.val.names == ["y.jpg"]


# --- bad input -------------------------------------------------------------------------------------------


def _coco_error(tmp_path, data: dict, clip: bool = False):
    path = _write_coco(tmp_path, "train.json", data)
    return read_detection_data(path, DataConfig(data=str(path), clip_boxes=clip))


@pytest.mark.parametrize("bbox, words", [
    ([30, 5, 20, 5], ["'a.png'", "outside the image", "[30, 5, 50, 10]", "40x30", "--clip-boxes"]),
    ([-3, 0, 5, 5], ["'a.png'", "outside the image", "[-3, 0, 2, 5]"]),
    ([5, 5, 0, 4], ["'a.png'", "no area", "[5, 5, 5, 9]", "--clip-boxes"]),
    ([5, 5, 4, -1], ["'a.png'", "no area"]),
])
def test_bad_boxes_name_the_image_and_box(tmp_path, bbox, words):
    with pytest.raises(DataError) as err:
        _coco_error(tmp_path, _coco(["a.png"], {"a.png": [(3, bbox)]}))
    for word in words:
        assert word in str(err.value)


def test_box_a_rounding_error_outside_is_clipped_silently(tmp_path):
    splits = _coco_error(tmp_path, _coco([f"{i}.png" for i in range(4)], {"0.png": [(3, [0, 0, 40.4, 30.2])]}))
    np.testing.assert_allclose(_by_name(splits)["0.png"][0], [[0, 0, 40, 30]])


def test_clip_boxes_clips_drops_and_warns_once(tmp_path, caplog):
    names = [f"{i}.png" for i in range(4)]
    boxes = {"0.png": [(3, [30, 5, 20, 5]), (3, [-3, -2, 10, 10]), (7, [5, 5, 0, 3])], "1.png": [(7, [50, 5, 5, 5])]}
    with caplog.at_level(logging.INFO, logger="tunewise"):
        splits = _coco_error(tmp_path, _coco(names, boxes), clip=True)
    found = _by_name(splits)
    np.testing.assert_array_equal(found["0.png"][0], [[30, 5, 40, 10], [0, 0, 7, 8]])
    np.testing.assert_array_equal(found["0.png"][1], [0, 0])
    assert found["1.png"][0].shape == (0, 4)  # wholly outside: dropped, the image kept as a negative
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "clipped 2 boxes" in warnings[0] and "dropped 2" in warnings[0]


def test_images_without_boxes_are_kept_and_counted(tmp_path, caplog):
    names = [f"{i}.png" for i in range(5)]
    with caplog.at_level(logging.INFO, logger="tunewise"):
        splits = _coco_error(tmp_path, _coco(names, {"0.png": [(3, [1, 1, 5, 5])], "1.png": [(7, [1, 1, 5, 5])]}))
    assert sum(len(p) for p in splits.named().values()) == 5
    lines = [r.getMessage() for r in caplog.records if "no boxes" in r.getMessage()]
    assert len(lines) == 1 and "3 of 5 images" in lines[0] and "negative" in lines[0]


def test_unknown_category_id_names_the_image_and_id(tmp_path):
    with pytest.raises(DataError, match=r"'a.png'.*category id 9.*not in the categories \(3, 7\)"):
        _coco_error(tmp_path, _coco(["a.png"], {"a.png": [(9, [1, 1, 5, 5])]}))


def test_voc_class_missing_from_classes_txt_names_the_image_and_class(tmp_path):
    _write_voc(tmp_path, {"000001": [("dog", [2, 2, 9, 9])]})
    (tmp_path / "classes.txt").write_text("cat\n")
    with pytest.raises(DataError, match=r"'000001.jpg'.*class 'dog'.*classes.txt' does not list"):
        read_detection_data(tmp_path, DataConfig(data=str(tmp_path)))


def test_missing_coco_image_names_the_file(tmp_path):
    path = _write_coco(tmp_path, "train.json", _coco(["a.png", "gone.png"], {}))
    (tmp_path / "images" / "gone.png").unlink()
    with pytest.raises(DataError, match=r"image 'gone.png' listed in .*train.json' does not exist"):
        read_detection_data(path, DataConfig(data=str(path)))


def test_missing_voc_image_names_the_annotation(tmp_path):
    _write_voc(tmp_path, {"000001": [("cat", [2, 2, 9, 9])]})
    (tmp_path / "JPEGImages" / "000001.jpg").unlink()
    with pytest.raises(DataError, match=r"000001.xml'.*does not exist in .*JPEGImages"):
        read_detection_data(tmp_path, DataConfig(data=str(tmp_path)))


@pytest.mark.parametrize("text, words", [
    ("", "is empty"),
    ("  \n", "is empty"),
    ('{"images": [', "is not valid JSON"),
    ('[1, 2]', "is not COCO JSON"),
    ('{"images": [], "annotations": []}', "is not COCO JSON"),
])
def test_empty_or_malformed_json_names_the_file(tmp_path, text, words):
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(DataError, match=words) as err:
        read_detection_data(path, DataConfig(data=str(path)))
    assert "broken.json" in str(err.value)


@pytest.mark.parametrize("text", ["", "<annotation><object>", "not xml at all"])
def test_empty_or_malformed_xml_names_the_file(tmp_path, text):
    _write_voc(tmp_path, {"000001": [("cat", [2, 2, 9, 9])]})
    (tmp_path / "Annotations" / "000001.xml").write_text(text)
    with pytest.raises(DataError, match=r"000001.xml' is not valid XML"):
        read_detection_data(tmp_path, DataConfig(data=str(tmp_path)))


def test_voc_object_without_a_box_names_the_file(tmp_path):
    _write_voc(tmp_path, {"000001": []})
    (tmp_path / "Annotations" / "000001.xml").write_text("<annotation><object><name>cat</name></object></annotation>")
    with pytest.raises(DataError, match=r"000001.xml' has an object without .*bndbox"):
        read_detection_data(tmp_path, DataConfig(data=str(tmp_path)))


def test_mask_of_another_size_names_both_sizes(tmp_path):
    _write_pairs(tmp_path, ["a", "b"])
    _image(tmp_path / "images" / "b.jpg", (8, 6))
    with pytest.raises(DataError, match=r"mask .*b.png' is 4x3 pixels but its image .*b.jpg' is 8x6"):
        read_segmentation_data(tmp_path, DataConfig(data=str(tmp_path)))


def test_image_without_mask_names_the_image(tmp_path):
    _write_pairs(tmp_path, ["a", "b"])
    (tmp_path / "masks" / "b.png").unlink()
    with pytest.raises(DataError, match=r"image .*b.jpg' has no mask: .*b.png' does not exist"):
        read_segmentation_data(tmp_path, DataConfig(data=str(tmp_path)))


def test_rgb_mask_is_refused(tmp_path):
    _write_pairs(tmp_path, ["a"])
    Image.new("RGB", (4, 3)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(DataError, match=r"a.png' is a RGB image.*palette \(P\) or grayscale \(L\)"):
        read_segmentation_data(tmp_path, DataConfig(data=str(tmp_path)))


def test_no_layout_says_what_is_allowed(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError, match="COCO JSON file.*Pascal VOC"):
        read_detection_data(tmp_path, DataConfig(data=str(tmp_path)))
    with pytest.raises(DataError, match="images/ and masks/"):
        read_segmentation_data(tmp_path, DataConfig(data=str(tmp_path)))


# --- generated demo sets ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo canvases for seeds 0 and 1 and the item pools of seed 0, generated once (cache in a tmp home)."""
    if not DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip(f"Fashion-MNIST is not in {DEBIAN_FASHION_MNIST} (apt-get install dataset-fashion-mnist)")
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        config = DataConfig(data="detection_demo")
        yield {"canvases": demo_canvases(config), "seed1": demo_canvases(DataConfig(data="detection_demo", seed=1)),
               "pools": item_pools(config), "home": str(home),
               "detection": load_data(config, "object_detection"),
               "segmentation": load_data(DataConfig(data="segmentation_demo"), "semantic_segmentation")}


def test_demo_sets_have_their_sizes_and_classes(demo):
    detection, segmentation = demo["detection"], demo["segmentation"]
    assert [len(p) for p in detection.named().values()] == list(DEMO_SIZES)
    assert detection.classes == DEMO_CLASSES == ["t-shirt", "trouser", "dress", "sneaker", "bag"]
    assert segmentation.classes == ["background", *DEMO_CLASSES]
    image, target = detection.train[1]
    assert image.size == (128, 128) and target["labels"].dtype == torch.int64 and target["boxes"].shape[1] == 4
    image, mask = segmentation.val[3]
    assert image.size == (128, 128) and tuple(mask.shape) == (128, 128)


def test_demo_is_deterministic_for_a_seed(demo):
    """The fixture generated seed 0 twice: once directly, once through load_data."""
    again = demo["detection"].named().values()
    for first, loaded, other in zip(demo["canvases"], again, demo["seed1"], strict=True):
        for a, b in zip(first.images, loaded.items, strict=True):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(first.boxes, loaded.boxes, strict=True):
            np.testing.assert_array_equal(a, b)
        assert not all(np.array_equal(a, b) for a, b in zip(first.images, other.images, strict=True))


def test_demo_boxes_are_the_extent_of_their_visible_pixels(demo):
    empty = 0
    for canvases in demo["canvases"]:
        for objects, boxes, classes, mask in zip(canvases.objects, canvases.boxes, canvases.box_classes,
                                                 canvases.masks, strict=True):
            assert len(boxes) == len(classes) <= 3 and objects.max() == len(boxes)
            empty += len(boxes) == 0
            for k, (box, c) in enumerate(zip(boxes, classes, strict=True)):
                rows, cols = np.nonzero(objects == k + 1)
                np.testing.assert_array_equal(box, [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
                assert (mask[objects == k + 1] == c + 1).all()
            assert ((mask == 0) == (objects == 0)).all()
    assert 0.05 < empty / sum(DEMO_SIZES) < 0.15


def test_demo_segmentation_masks_match_the_detection_boxes(demo):
    detection, segmentation = demo["detection"], demo["segmentation"]
    for part in ("train", "val", "test"):
        boxes_set, masks_set = getattr(detection, part), getattr(segmentation, part)
        for i in range(0, len(boxes_set), 7):
            np.testing.assert_array_equal(boxes_set.items[i], masks_set.items[i])
            mask = masks_set.masks[i]
            for box, c in zip(boxes_set.boxes[i], boxes_set.box_classes[i], strict=True):
                x1, y1, x2, y2 = box.astype(int)
                assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 128
                inside = mask[y1:y2, x1:x2] == c + 1
                # tight: the class's pixels touch all four sides of the box
                assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            present = set(np.unique(mask).tolist()) - {0}
            assert present == {int(c) + 1 for c in boxes_set.box_classes[i]}


def test_demo_splits_draw_disjoint_items(demo):
    used = [{pool[0][i].tobytes() for s in canvases.sources for i in s}
            for canvases, pool in zip(demo["canvases"], demo["pools"], strict=True)]
    assert all(used) and not used[0] & used[1] and not used[0] & used[2] and not used[1] & used[2]
    for canvases in demo["canvases"]:
        every = np.concatenate(canvases.sources)
        assert len(every) == len(set(every.tolist()))  # no item twice within a split


def test_demo_respects_max_train_per_class_and_the_task(demo, monkeypatch):
    monkeypatch.setenv("HOME", demo["home"])  # the unpacked Fashion-MNIST of the fixture
    limited = load_data(DataConfig(data="detection_demo", max_train_per_class=50), "object_detection")
    assert len(limited.train) == 50 and len(limited.val) == DEMO_SIZES[1]
    with pytest.raises(DataError, match="holds data for object_detection.*images with masks"):
        load_data(DataConfig(data="detection_demo"), "semantic_segmentation")


def test_generate_canvases_is_small_and_fast(demo):
    items, classes = demo["pools"][2]
    canvases = generate_canvases((items[:40], classes[:40]), 10, seed=3)
    assert len(canvases.images) == 10 and canvases.images[0].shape == (128, 128, 3)
    assert canvases.images[0].dtype == np.uint8 and canvases.masks[0].dtype == np.uint8


def test_coco_splits_with_other_categories_are_refused(tmp_path):
    _write_coco(tmp_path, "train.json", _coco(["a.png"], {}))
    _write_coco(tmp_path, "val.json", _coco(["b.png"], {}, categories=((7, "dog"), (3, "bird"))))
    with pytest.raises(DataError, match=r"val.json' has category id 3 = 'bird', but the training file calls it 'cat'"):
        read_detection_data(tmp_path, DataConfig(data=str(tmp_path)))


def test_voc_list_naming_a_missing_annotation_names_both(tmp_path):
    _write_voc(tmp_path, {"000001": [("cat", [2, 2, 9, 9])]}, {"train": ["000001", "000009"]})
    with pytest.raises(DataError, match=r"train.txt' lists '000009' but .*000009.xml' does not exist"):
        read_detection_data(tmp_path, DataConfig(data=str(tmp_path)))
