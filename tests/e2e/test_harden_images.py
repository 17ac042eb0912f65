"""Issue 13's bad-input matrix, images: every PIL mode read as the model should see it, and broken
files (truncated, decompression bombs, unreadable inside a DataLoader worker) ending as a counted
warning or a one-line error, never a traceback, and never touching the user's data folder.

The mode cases read the data through `load_data`, as fit does (the CLI shows no pixels); the rest
run `tunewise fit` in-process on a tiny timm model.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import write_png_declaring
from hardening import assert_user_error, run, snapshot
from PIL import Image

from tunewise.config import DataConfig
from tunewise.data import load_data

SOURCE = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [40, 80, 120]],
                   [[10, 20, 30], [200, 100, 50], [128, 128, 128], [250, 250, 5]]], np.uint8)
"""The pixels each mode's file is made from (2x4: primaries, darks, brights, grey)."""
GREY = np.array([[0, 1, 2, 127], [128, 130, 254, 255]], np.uint8)
ALPHA = np.array([[255, 0, 128, 255], [0, 255, 64, 255]], np.uint8)
WHITE = 255


def _grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values.astype(float)[..., None], 3, axis=2)


def _on_white(rgb: np.ndarray, alpha: np.ndarray = ALPHA) -> np.ndarray:
    share = alpha[..., None] / 255
    return rgb * share + WHITE * (1 - share)


def _palette(transparent: bool) -> Image.Image:
    image = Image.fromarray(SOURCE).quantize(colors=16)
    if transparent:
        image.info["transparency"] = int(np.asarray(image)[0, 1])  # the green pixel's index
    return image


def _palette_expected(transparent: bool) -> np.ndarray:
    expected = SOURCE.astype(float)
    if transparent:
        indices = np.asarray(_palette(True))
        expected[indices == indices[0, 1]] = WHITE
    return expected


# mode: (file name, the image to save, what the model must see as RGB, tolerance)
MODES = {
    "I;16": ("deep.png", lambda: Image.fromarray(GREY.astype(np.uint16) * 257), _grey(GREY), 0),
    "I;16B": ("deep.tif", lambda: Image.frombytes("I;16B", (4, 2), (GREY.astype(">u2") * 257).tobytes()),
              _grey(GREY), 0),
    "I": ("int32.tif", lambda: Image.fromarray(GREY.astype(np.int32) * 257), _grey(GREY), 0),
    "F": ("float.tif", lambda: Image.fromarray(GREY.astype(np.float32) / 255), _grey(GREY), 0),
    "P": ("palette.png", lambda: _palette(False), _palette_expected(False), 0),
    "P-transparent": ("palette.png", lambda: _palette(True), _palette_expected(True), 0),
    "PA": ("palette.tif", lambda: _pa(), _on_white(_palette_expected(False)), 1),
    "RGBA": ("alpha.png", lambda: Image.fromarray(np.dstack([SOURCE, ALPHA]), "RGBA"), _on_white(SOURCE), 1),
    "LA": ("alpha.png", lambda: Image.fromarray(np.dstack([GREY, ALPHA]), "LA"), _on_white(_grey(GREY)), 1),
    "1": ("bilevel.png", lambda: Image.fromarray(GREY > 127).convert("1"), _grey((GREY > 127) * 255), 0),
    "L": ("grey.png", lambda: Image.fromarray(GREY, "L"), _grey(GREY), 0),
    "RGB": ("colour.png", lambda: Image.fromarray(SOURCE), SOURCE, 0),
    "CMYK": ("print.tif", lambda: Image.fromarray(SOURCE).convert("CMYK"), SOURCE, 0),
    "YCbCr": ("video.tif", lambda: Image.fromarray(SOURCE).convert("YCbCr"), SOURCE, 3),
}


def _pa() -> Image.Image:
    """A palette image with an alpha channel (PA): the palette colours under ALPHA."""
    image = _palette(False).convert("PA")
    image.putalpha(Image.fromarray(ALPHA, "L"))
    return image


@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_reaches_the_model_as_the_right_rgb(tmp_path, mode):
    name, make, expected, tolerance = MODES[mode]
    image = make()
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(2):
            image.save(tmp_path / "data" / label / f"{i}{name}")
    with Image.open(tmp_path / "data" / "a" / f"0{name}") as saved:
        assert saved.mode == mode.removesuffix("-transparent")  # the file holds the mode under test
    before = snapshot(tmp_path / "data")

    splits = load_data(DataConfig(data=str(tmp_path / "data"), val_fraction=0.5, test_fraction=0))
    seen = [np.asarray(splits.train[i][0]).astype(float) for i in range(len(splits.train))]

    assert len(seen) == 2 and all(s.shape == (2, 4, 3) for s in seen)
    assert max(np.abs(s - expected).max() for s in seen) <= tolerance, seen[0].round().tolist()
    assert snapshot(tmp_path / "data") == before


# --- broken files, through `tunewise fit` -------------------------------------------------------------


@pytest.fixture
def data(image_folder, tmp_path) -> Path:
    """A copy of the shared image folder, for a case to add its broken file to."""
    return Path(shutil.copytree(image_folder, tmp_path / "data"))


def _fit(capsys, weights: Path, data: Path, out: Path, *more: object):
    return run(capsys, "fit", "--model", "timm:test_resnet", "--weights", weights, "--data", data, "--out", out,
               "--epochs", "1", "--batch-size", "8", "--image-size", "32", "--device", "cpu", "--num-workers", "0",
               *more)


def _truncated_jpeg(path: Path) -> Path:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])
    return path


def _bomb(path: Path) -> Path:
    """Under 100 bytes on disk, 2.5 G pixels declared."""
    return write_png_declaring(path, 50_000, 50_000)


BROKEN = {
    "truncated-jpeg": (_truncated_jpeg, "cut.jpg", ["cut.jpg", "truncated"]),
    "decompression-bomb": (_bomb, "bomb.png", ["bomb.png", "2,500,000,000 pixels", "TUNEWISE_MAX_IMAGE_PIXELS"]),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_file_is_skipped_with_a_warning_and_the_run_completes(capsys, caplog, tiny_weights, data, tmp_path,
                                                                        case):
    make, name, words = BROKEN[case]
    make(data / "green" / name)
    before = snapshot(data)
    with caplog.at_level(logging.WARNING, logger="tunewise"):  # in-process, the log goes to caplog, not stderr
        outcome = _fit(capsys, tiny_weights, data, tmp_path / "run")
    assert outcome.code == 0, outcome.err
    assert "Traceback" not in outcome.err + outcome.out
    [warning] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    assert "skipped 1 unreadable" in warning and all(w in warning for w in words), warning
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert snapshot(data) == before  # the broken file is left where it was


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_file_is_refused_up_front_under_strict(capsys, tiny_weights, data, tmp_path, case):
    make, name, words = BROKEN[case]
    make(data / "green" / name)
    before = snapshot(data)
    outcome = _fit(capsys, tiny_weights, data, tmp_path / "run", "--strict")
    assert_user_error(outcome, [*words, "not a readable image", "--strict"])
    assert not (tmp_path / "run").exists()
    assert snapshot(data) == before


def test_a_16_bit_png_folder_trains_and_predicts(capsys, tiny_weights, tmp_path):
    """The folder reads as its 8-bit mean (the mode cases above check the pixels); fit and predict
    complete on it, and predict refuses a decompression bomb among its inputs by name."""
    rng = np.random.default_rng(0)
    for c, label in enumerate(("dark", "light")):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(8):
            eight_bit = rng.integers(60 * c, 120 + 60 * c, (32, 32)).astype(np.uint16)
            Image.fromarray(eight_bit * 257).save(tmp_path / "data" / label / f"{i}.png")
    splits = load_data(DataConfig(data=str(tmp_path / "data")))
    with Image.open(splits.train.items[0]) as image:
        source = np.asarray(image) / 257
    assert abs(np.asarray(splits.train[0][0]).mean() - source.mean()) < 0.5  # was 255: clipped to white
    outcome = _fit(capsys, tiny_weights, tmp_path / "data", tmp_path / "run")
    assert outcome.code == 0 and "Traceback" not in outcome.err, outcome.err

    deep = tmp_path / "data" / "light" / "0.png"
    predicted = run(capsys, "predict", tmp_path / "run", deep)
    assert predicted.code == 0 and "1 predictions" in predicted.out, predicted.err
    before = snapshot(tmp_path / "run")
    bomb = _bomb(tmp_path / "bomb.png")
    assert_user_error(run(capsys, "predict", tmp_path / "run", deep, bomb),
                      ["bomb.png", "2,500,000,000 pixels", "TUNEWISE_MAX_IMAGE_PIXELS"])
    assert snapshot(tmp_path / "run") == before


def test_an_image_unreadable_inside_a_loader_worker_is_one_line(capfd, monkeypatch, tiny_weights, data, tmp_path):
    """A file that breaks after the data was read (a network share, a concurrent writer) fails in a
    DataLoader worker process; torch wraps its error in the worker's traceback text. capfd, not
    capsys: it also sees what the worker processes print."""
    import tunewise.data.images
    from tunewise import cli

    _truncated_jpeg(data / "green" / "cut.jpg")
    monkeypatch.setattr(tunewise.data.images, "image_problem", lambda path, convert=True: None)  # passes the check
    raised: list[str] = []
    explain = cli.explain
    monkeypatch.setattr(cli, "explain", lambda err: raised.append(str(err)) or explain(err))
    before = snapshot(data)
    outcome = _fit(capfd, tiny_weights, data, tmp_path / "run", "--num-workers", "2")
    assert_user_error(outcome, ["cannot read image", "cut.jpg", "truncated", "remove or replace the file"])
    assert "Caught DataError in DataLoader worker process" in raised[0]  # it did fail inside a worker
    assert snapshot(data) == before
