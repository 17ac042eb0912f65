"""Reading image files (tunewise.data.images): every PIL mode to 8-bit RGB, and the up-front check that
decodes each file once (truncated files, decompression bombs, the pixel limit)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_png_declaring
from PIL import Image

from tunewise.config import DataConfig
from tunewise.data.dense_files import read_detection_data, read_segmentation_data
from tunewise.data.images import PIXEL_LIMIT, Unreadable, image_problem, open_image, to_rgb
from tunewise.errors import ConfigError, DataError

COLOURS = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]],
                    [[10, 20, 30], [200, 100, 50], [128, 128, 128]]], np.uint8)
"""A 3x2 RGB image: pure primaries, a dark and a bright colour, mid grey."""
GREY = np.array([[0, 1, 127], [128, 254, 255]], np.uint8)


def _rgb(image: Image.Image) -> np.ndarray:
    converted = to_rgb(image)
    assert converted.mode == "RGB" and converted.size == image.size
    return np.asarray(converted).astype(int)


def _as_grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values.astype(int)[..., None], 3, axis=2)


# --- every mode to 8-bit RGB ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L"])
def test_16_bit_images_are_scaled_not_clipped(mode):
    dtype = ">u2" if mode == "I;16B" else "<u2"
    image = Image.frombytes(mode, (3, 2), (GREY.astype(np.uint16) * 257).astype(dtype).tobytes())
    assert (_rgb(image) == _as_grey(GREY)).all()  # PIL's convert("RGB") makes all but 0 white


def test_16_bit_values_round_to_the_nearest_8_bit_level():
    values = np.array([[0, 128, 129, 385, 65406, 65535]], np.uint16)
    assert _rgb(Image.fromarray(values))[0, :, 0].tolist() == [0, 0, 1, 1, 254, 255]


def test_32_bit_integer_images_are_read_as_16_bit():
    image = Image.fromarray(GREY.astype(np.int32) * 257)
    assert image.mode == "I"
    assert (_rgb(image) == _as_grey(GREY)).all()


@pytest.mark.parametrize("values", [[-1, 0], [0, 70000]], ids=["negative", "above-16-bit"])
def test_32_bit_integers_outside_16_bits_are_refused(values):
    with pytest.raises(DataError, match="outside the 16-bit range"):
        to_rgb(Image.fromarray(np.array([values], np.int32)))


@pytest.mark.parametrize(("scale", "given"), [(1 / 255, "0..1"), (1, "0..255")])
def test_float_images_in_0_1_or_0_255_are_scaled_to_8_bits(scale, given):
    image = Image.fromarray(GREY.astype(np.float32) * scale)
    assert image.mode == "F"
    assert (_rgb(image) == _as_grey(GREY)).all(), given


@pytest.mark.parametrize("values", [[-0.5, 0.5], [0, 300], [0, np.nan]], ids=["negative", "above-255", "nan"])
def test_float_images_outside_0_255_are_refused(values):
    with pytest.raises(DataError, match="mode F"):
        to_rgb(Image.fromarray(np.array([values], np.float32)))


@pytest.mark.parametrize("mode", ["RGB", "RGBX", "HSV", "CMYK"])
def test_colour_modes_convert_exactly(mode):
    assert (_rgb(Image.fromarray(COLOURS).convert(mode)) == COLOURS).all()


@pytest.mark.parametrize(("mode", "tolerance"), [("YCbCr", 3), ("LAB", 25)])
def test_colour_spaces_convert_within_rounding(mode, tolerance):
    assert np.abs(_rgb(Image.fromarray(COLOURS).convert(mode)) - COLOURS).max() <= tolerance


def test_grey_and_bilevel_images_become_grey_rgb():
    assert (_rgb(Image.fromarray(GREY, "L")) == _as_grey(GREY)).all()
    bilevel = Image.fromarray(GREY > 127).convert("1")
    assert (_rgb(bilevel) == _as_grey(np.where(GREY > 127, 255, 0))).all()


def test_a_palette_image_shows_its_palette_colours():
    palette = Image.fromarray(COLOURS).quantize(colors=8)
    assert palette.mode == "P"
    assert (_rgb(palette) == COLOURS).all()


def test_transparent_pixels_are_laid_on_white():
    alpha = np.array([[255, 0, 128], [255, 255, 0]], np.uint8)
    rgba = Image.fromarray(np.dstack([COLOURS, alpha]), "RGBA")
    expected = np.round(COLOURS * (alpha[..., None] / 255) + 255 * (1 - alpha[..., None] / 255))
    assert np.abs(_rgb(rgba) - expected).max() <= 1
    assert (_rgb(rgba.convert("RGBa")) - expected).max() <= 2  # premultiplied: rounding of the stored values
    grey_alpha = Image.fromarray(np.dstack([GREY, alpha]), "LA")
    assert np.abs(_rgb(grey_alpha) - np.round(_as_grey(GREY) * (alpha[..., None] / 255)
                                               + 255 * (1 - alpha[..., None] / 255))).max() <= 1


def test_a_palette_with_a_transparent_entry_shows_white_there():
    palette = Image.fromarray(COLOURS).quantize(colors=8)
    hidden = int(np.asarray(palette)[0, 0])  # the index of the red pixel
    palette.info["transparency"] = hidden
    expected = COLOURS.astype(int).copy()
    expected[np.asarray(palette) == hidden] = 255
    assert (_rgb(palette) == expected).all()
    with_alpha = palette.convert("PA")
    assert with_alpha.mode == "PA"
    assert (_rgb(with_alpha) == expected).all()


def test_a_mode_without_a_conversion_is_a_data_error():
    premultiplied_grey = Image.new("La", (2, 2))
    with pytest.raises(DataError, match="mode La cannot be converted"):
        to_rgb(premultiplied_grey)


# --- files -----------------------------------------------------------------------------------------


def test_a_16_bit_png_keeps_its_mean(tmp_path):
    """The case of issue 13: PIL's conversion turned it white (mean 130.7 became 255.0)."""
    eight_bit = np.random.default_rng(0).integers(0, 256, (32, 32)).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(eight_bit * 257).save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"
        assert np.asarray(image.convert("RGB")).mean() > 250  # what tunewise did before
    assert abs(np.asarray(open_image(path)).mean() - eight_bit.mean()) < 0.01


def test_a_16_bit_big_endian_tiff_keeps_its_values(tmp_path):
    path = tmp_path / "deep.tif"
    Image.frombytes("I;16B", (3, 2), (GREY.astype(np.uint16) * 257).astype(">u2").tobytes()).save(path)
    assert (np.asarray(open_image(path)).astype(int) == _as_grey(GREY)).all()


def test_a_cmyk_jpeg_reads_as_rgb(tmp_path):
    path = tmp_path / "print.jpg"
    Image.fromarray(np.full((16, 16, 3), (200, 40, 40), np.uint8)).convert("CMYK").save(path, quality=95)
    assert np.abs(np.asarray(open_image(path)).astype(int) - (200, 40, 40)).max() <= 6


def test_arrays_open_as_rgb():
    assert np.asarray(open_image(GREY)).shape == (2, 3, 3)
    assert (np.asarray(open_image(COLOURS)) == COLOURS).all()


def _truncated_jpeg(path: Path, size: int = 64) -> Path:
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])
    return path


def test_a_truncated_jpeg_passes_pil_verify_but_not_the_check(tmp_path):
    path = _truncated_jpeg(tmp_path / "cut.jpg")
    with Image.open(path) as image:
        image.verify()  # what tunewise checked before: the header only
    assert "truncated" in image_problem(path)
    with pytest.raises(DataError, match=r"cannot read image '.*cut\.jpg': image file is truncated.*Remove or replace"):
        open_image(path)


def test_a_large_jpeg_is_checked_at_reduced_scale_yet_in_full(tmp_path):
    path = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(path)
    assert image_problem(path) is None
    data = path.read_bytes()
    path.write_bytes(data[:-200])  # the last rows only
    assert "truncated" in image_problem(path)


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = write_png_declaring(tmp_path / "bomb.png", 50_000, 50_000)
    assert path.stat().st_size < 100
    problem = image_problem(path)
    assert "2,500,000,000 pixels" in problem and "89,478,485" in problem
    assert f"{PIXEL_LIMIT}=2500000000" in problem


@pytest.mark.parametrize("side", [40, 100], ids=["above-limit", "above-twice-limit"])
def test_the_pixel_limit_comes_from_the_environment(tmp_path, monkeypatch, side):
    """PIL warns between its limit and twice it, and raises above: both are refused."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    path = tmp_path / "a.png"
    Image.new("RGB", (side, side)).save(path)
    monkeypatch.setenv(PIXEL_LIMIT, "1000")
    assert f"{side * side:,} pixels, above the limit of 1,000" in image_problem(path)
    monkeypatch.setenv(PIXEL_LIMIT, str(side * side))
    assert image_problem(path) is None


@pytest.mark.parametrize("given", ["lots", "-5", "0", "1e9"])
def test_a_bad_pixel_limit_is_a_config_error(tmp_path, monkeypatch, given):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    path = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(path)
    monkeypatch.setenv(PIXEL_LIMIT, given)
    with pytest.raises(ConfigError, match=f"{PIXEL_LIMIT}='{given}' is not a positive whole number"):
        image_problem(path)


def test_a_truncated_mask_is_found_without_converting_it(tmp_path):
    path = tmp_path / "mask.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 4, (64, 64), dtype=np.uint8), "L").save(path)
    assert image_problem(path, convert=False) is None
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert image_problem(path, convert=False) is not None


# --- skipping -----------------------------------------------------------------------------------


def test_skipped_files_are_counted_in_one_warning_naming_a_few(tmp_path, caplog):
    good = tmp_path / "good.png"
    Image.new("RGB", (4, 4)).save(good)
    bad = [_truncated_jpeg(tmp_path / f"cut{i}.jpg") for i in range(5)]
    unreadable = Unreadable(strict=False)
    with caplog.at_level(logging.WARNING, logger="tunewise"):
        kept = [p for p in [good, *bad] if unreadable.usable(p)]
        unreadable.warn(tmp_path)
    assert kept == [good]
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"skipped 5 unreadable or non-image files in {tmp_path}: cut0.jpg (image file is "
                              "truncated")
    assert "cut2.jpg" in warning and "cut3.jpg" not in warning and "2 more" in warning and "--strict" in warning


def test_under_strict_the_first_unreadable_file_is_refused_by_name(tmp_path):
    path = _truncated_jpeg(tmp_path / "cut.jpg")
    with pytest.raises(DataError, match=r"'.*cut\.jpg' is not a readable image: image file is truncated .* "
                                        r"\(--strict\)\. Remove or replace it, or drop --strict"):
        Unreadable(strict=True).usable(path)


# --- detection and segmentation data ---------------------------------------------------------------


def _coco_folder(root: Path, names: list[str]) -> Path:
    """root/train.json and root/images/: one 64x64 image per name, each with one box of class 'dog'."""
    (root / "images").mkdir(parents=True)
    for name in names:
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
            root / "images" / name)
    entries = [{"id": i, "file_name": name} for i, name in enumerate(names)]  # no sizes: read from the files
    boxes = [{"id": i, "image_id": i, "category_id": 1, "bbox": [2, 2, 20, 20]} for i in range(len(names))]
    (root / "train.json").write_text(json.dumps({"images": entries, "annotations": boxes,
                                                 "categories": [{"id": 1, "name": "dog"}]}))
    return root


def _segmentation_folder(root: Path, names: list[str]) -> Path:
    """root/images/<name>.png (16-bit grey) and root/masks/<name>.png (L, classes 0..2)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name in names:
        Image.fromarray(np.full((16, 16), 100 * 257, np.uint16)).save(root / "images" / f"{name}.png")
        Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16) % 3, "L").save(root / "masks" / f"{name}.png")
    return root


def test_a_truncated_image_in_coco_data_is_skipped_or_refused(tmp_path, caplog):
    root = _coco_folder(tmp_path / "coco", [f"{i}.jpg" for i in range(6)])
    _truncated_jpeg(root / "images" / "3.jpg")
    with caplog.at_level(logging.WARNING, logger="tunewise"):
        splits = read_detection_data(root / "train.json", DataConfig(data=str(root), val_fraction=0.2,
                                                                     test_fraction=0.2))
    names = {part.name(i) for part in splits.named().values() for i in range(len(part))}
    assert names == {"0.jpg", "1.jpg", "2.jpg", "4.jpg", "5.jpg"}
    assert any("skipped 1 " in r.getMessage() and "3.jpg" in r.getMessage() for r in caplog.records)
    with pytest.raises(DataError, match=r"3\.jpg' is not a readable image.*--strict"):
        read_detection_data(root / "train.json", DataConfig(data=str(root), strict=True))


def test_a_truncated_image_in_voc_detection_data_is_skipped(tmp_path, caplog):
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for i in range(4):
        Image.new("RGB", (32, 32), (200, 0, 0)).save(root / "JPEGImages" / f"{i}.jpg")
        (root / "Annotations" / f"{i}.xml").write_text(
            f"<annotation><filename>{i}.jpg</filename><object><name>dog</name><bndbox><xmin>2</xmin><ymin>2</ymin>"
            "<xmax>20</xmax><ymax>20</ymax></bndbox></object></annotation>")  # no <size>: read from the image
    _truncated_jpeg(root / "JPEGImages" / "2.jpg")
    with caplog.at_level(logging.WARNING, logger="tunewise"):
        splits = read_detection_data(root, DataConfig(data=str(root), val_fraction=0.25, test_fraction=0))
    assert sorted(part.name(i) for part in splits.named().values() for i in range(len(part))) == \
        ["0.jpg", "1.jpg", "3.jpg"]
    assert any("skipped 1 " in r.getMessage() for r in caplog.records)


def test_segmentation_images_are_scaled_and_their_masks_left_as_labels(tmp_path):
    root = _segmentation_folder(tmp_path / "seg", ["a", "b", "c", "d"])
    splits = read_segmentation_data(root, DataConfig(data=str(root), val_fraction=0.25, test_fraction=0))
    image, mask = splits.train[0]
    assert (np.asarray(image) == 100).all()  # 16-bit 100*257, not clipped to white
    assert np.unique(np.asarray(mask)).tolist() == [0, 1, 2]  # label indices, never rescaled


@pytest.mark.parametrize("broken", ["images/b.png", "masks/b.png"])
def test_a_truncated_segmentation_image_or_mask_drops_its_pair(tmp_path, caplog, broken):
    root = _segmentation_folder(tmp_path / "seg", ["a", "b", "c", "d"])
    data = (root / broken).read_bytes()
    (root / broken).write_bytes(data[: len(data) // 3])
    with caplog.at_level(logging.WARNING, logger="tunewise"):
        splits = read_segmentation_data(root, DataConfig(data=str(root), val_fraction=0.25, test_fraction=0))
    assert sorted(part.name(i) for part in splits.named().values() for i in range(len(part))) == \
        ["a.png", "c.png", "d.png"]
    assert any("skipped 1 " in r.getMessage() and broken in r.getMessage() for r in caplog.records)
    with pytest.raises(DataError, match=rf"{broken}' is not a readable image.*--strict"):
        read_segmentation_data(root, DataConfig(data=str(root), strict=True))


def test_a_file_is_decoded_once_while_it_stays_the_same(tmp_path, monkeypatch):
    """A search reads its data once per trial: the check is remembered per file size and mtime."""
    import tunewise.data.images as images

    decoded = []
    decode = images._decode
    monkeypatch.setattr(images, "_decode", lambda path, **kw: decoded.append(path) or decode(path, **kw))
    path = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(path)
    assert image_problem(path) is None and image_problem(path) is None
    assert decoded == [path]
    Image.new("RGB", (9, 9)).save(path)  # changed: checked again
    assert image_problem(path) is None and decoded == [path, path]


def test_kept_pixels_are_the_evaluation_pipelines_and_decoded_twice(tmp_path, monkeypatch):
    """A split read every epoch without augmentation is decoded twice in all (a split read once holds no
    memory): KeptPixels gives, bit for bit, what the evaluation transform gives, and a third pass opens
    no file."""
    from conftest import write_image_folder

    from tunewise import DataConfig
    from tunewise.backbones.base import Preprocess
    from tunewise.data import base, load_data
    from tunewise.data.base import KeptPixels

    val = load_data(DataConfig(data=str(write_image_folder(tmp_path)))).val
    preprocess = Preprocess(input_size=32, resize_size=36)
    plain = val.with_transform(preprocess.eval_transform())
    kept = KeptPixels(val, preprocess.pixel_steps(), preprocess.scale_steps())
    opened = []
    monkeypatch.setattr(base, "open_image", lambda item, real=base.open_image: opened.append(item) or real(item))
    for _ in range(3):
        for i in range(len(val)):
            (ours, label), (theirs, true) = kept[i], plain[i]
            assert torch.equal(ours, theirs) and label == true
    assert len(opened) == 3 * len(val) + 2 * len(val)  # the plain set's three passes, KeptPixels's first two
    assert len(kept.kept) == len(val)
    opened.clear()
    first = KeptPixels(val, preprocess.pixel_steps(), preprocess.scale_steps(), first_read=True)
    for _ in range(2):  # a split known to be read again: kept from its first read
        assert all(torch.equal(first[i][0], plain[i][0]) for i in range(len(val)))
    assert len(opened) == 2 * len(val) + len(val)


@pytest.mark.parametrize(("training", "epochs", "first_read"), [(True, 2, True), (True, 1, False), (False, 2, False)])
def test_only_a_training_split_read_again_keeps_its_pixels_from_the_first_read(tmp_path, training, epochs, first_read):
    """The training split of a run of several epochs is read again for sure; a one-epoch run's, and an
    evaluation split (a test split is read once), wait for a second read."""
    from conftest import write_image_folder

    from tunewise import DataConfig, TrainConfig
    from tunewise.backbones.base import Preprocess
    from tunewise.data import load_data
    from tunewise.data.base import KeptPixels
    from tunewise.tasks import get_task

    val = load_data(DataConfig(data=str(write_image_folder(tmp_path)))).val
    train = TrainConfig(epochs=epochs, augment=False, num_workers=0)
    shown = get_task("image_classification").loader(val, Preprocess(input_size=32), train, training=training).dataset
    shown = shown.data if training else shown  # training batches draw through a seeded wrapper
    assert isinstance(shown, KeptPixels) and shown.first_read is first_read
