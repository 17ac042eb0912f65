"""Image files as a model reads them: every PIL mode to 8-bit RGB (`open_image`), and each file decoded
in full once when the data is first read (`Unreadable`), so that a broken file is skipped, or refused
under --strict, before a run starts instead of killing it mid-epoch.

Segmentation masks are label maps: they are checked here (`convert=False`) but never converted.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from tunewise.errors import ConfigError, DataError

log = logging.getLogger("tunewise")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
PIXEL_LIMIT = "TUNEWISE_MAX_IMAGE_PIXELS"
"""Environment variable: the most pixels an image may have (PIL's guard against decompression bombs,
Image.MAX_IMAGE_PIXELS, 89,478,485 unless set); raise it to read larger files you trust."""
BACKGROUND = (255, 255, 255)
"""What transparent pixels are laid on. The colour a file keeps under full transparency is arbitrary
(often black), so dropping the alpha channel would show it; white is what viewers show, and what the
transformers image processors use."""
SHOWN = 3
"""How many skipped files the warning names."""
_WARNINGS = threading.Lock()
"""Warning filters are process-wide: threads that open images at once (a server) take turns."""


def open_image(item: Path | np.ndarray | bytes) -> Image.Image:
    """An image as the models see it: decoded in full, then made 8-bit RGB by `to_rgb`.

    Items are file paths, arrays ((H, W) or (H, W, 3) uint8, as the torchvision sets hold) or an
    encoded file's bytes (a TFRecord's images).

    Raises:
        DataError: the file cannot be decoded, is above the pixel limit, or holds values `to_rgb` refuses.
    """
    if isinstance(item, np.ndarray):
        return to_rgb(Image.fromarray(item))
    if isinstance(item, bytes):
        try:
            return read_image_bytes(item)
        except DataError as err:
            raise DataError(f"cannot read an image of {len(item)} bytes held in memory: {err}. Replace its "
                            "record in the data.") from None
    try:
        return _decode(item, full=True, convert=True)
    except DataError as err:
        raise DataError(f"cannot read image {str(item)!r}: {err}. Remove or replace the file.") from None


def read_image_bytes(data: bytes) -> Image.Image:
    """An image sent as bytes (an upload), decoded and converted as `open_image` does, under the same
    pixel limit.

    Raises:
        DataError: (a few words) why it cannot be read.
    """
    return _decode(io.BytesIO(data), full=True, convert=True)


def image_problem(path: Path, convert: bool = True) -> str | None:
    """Why `path` cannot be used, in a few words, or None. The whole file is decoded (a JPEG at 1/8
    scale, which still reads every byte): PIL's `verify` reads a JPEG's header only, and a truncated
    one passed it.

    Args:
        convert: also convert it as `open_image` does (False for masks, which are never converted).
    """
    try:
        stat = path.stat()
    except OSError as err:
        return err.strerror or str(err)
    return _problem(path, stat.st_size, stat.st_mtime_ns, convert, os.environ.get(PIXEL_LIMIT))


@functools.lru_cache(maxsize=1 << 18)
def _problem(path: Path, size: int, mtime_ns: int, convert: bool, limit: str | None) -> str | None:
    """image_problem, remembered while the file and the limit stay the same: a search reads its data
    once per trial, and decoding every file each time would cost more than the check is worth."""
    try:
        _decode(path, full=False, convert=convert)
    except DataError as err:
        return str(err)
    return None


def bytes_problem(data: bytes) -> str | None:
    """Why the encoded image `data` cannot be used, in a few words, or None: `image_problem` for an
    image held in memory (decoded as a file is, converted as `open_image` does)."""
    try:
        _decode(io.BytesIO(data), full=False, convert=True)
    except DataError as err:
        return str(err)
    return None


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, from any mode.

    - 16-bit (I;16, I;16B, I;16L, I;16N) and 32-bit integer (I, as PIL reads some 16-bit files):
      scaled by 255/65535, not clipped (PIL's own conversion clips them to white); I must hold 0..65535.
    - float (F): values in 0..1 are scaled by 255, values up to 255 kept (PIL's convention); others refused.
    - transparency (RGBA, LA, PA, P or L or RGB with a transparent colour): composited on BACKGROUND.
    - the rest (1, L, P, RGB, CMYK, YCbCr, LAB, HSV): PIL's conversion.

    Raises:
        DataError: (a few words) values out of the range above, or a mode PIL cannot convert.
    """
    if image.mode.startswith("I"):
        return _gray(_integers(np.asarray(image), image.mode))
    if image.mode == "F":
        return _gray(_floats(np.asarray(image)))
    try:
        if image.has_transparency_data:
            on = Image.new("RGBA", image.size, (*BACKGROUND, 255))
            return Image.alpha_composite(on, image.convert("RGBA")).convert("RGB")
        return image.convert("RGB")
    except ValueError as err:  # a mode without a conversion (La, a premultiplied mode no file stores)
        raise DataError(f"its mode {image.mode} cannot be converted to RGB ({err})") from None


def _integers(values: np.ndarray, mode: str) -> np.ndarray:
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > 65535:
        raise DataError(f"it holds 32-bit integers (mode {mode}) from {low} to {high}, outside the 16-bit "
                        "range 0..65535 that tunewise scales to 8 bits; save it as an 8- or 16-bit image")
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(v * 255 / 65535)


def _floats(values: np.ndarray) -> np.ndarray:
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 255:
        raise DataError(f"it holds floats (mode F) outside 0..1 and 0..255 (from {np.nanmin(values):g} to "
                        f"{np.nanmax(values):g}, or NaN); save it as an 8- or 16-bit image")
    scale = 255 if values.max() <= 1 else 1
    return np.round(values * scale).astype(np.uint8)


def _gray(values: np.ndarray) -> Image.Image:
    return Image.fromarray(values, "L").convert("RGB")


def _decode(path: Path | IO[bytes], full: bool, convert: bool) -> Image.Image:
    """The file decoded (JPEGs at 1/8 scale unless `full`) and, with `convert`, made RGB.

    Raises:
        DataError: (a few words) why it cannot be read.
    """
    with _open(path) as image:
        if not full and image.format == "JPEG":
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
        try:
            image.load()
        except Exception as err:  # PIL's decoders raise many kinds for a broken file (OSError, SyntaxError,
            raise DataError(str(err) or type(err).__name__) from None  # EOFError, struct.error, ValueError)
        return to_rgb(image) if convert else image


def _open(path: Path | IO[bytes]) -> Image.Image:
    """The file opened (its header read); above the pixel limit it is refused before any pixel is decoded."""
    _apply_pixel_limit()
    with _WARNINGS, warnings.catch_warnings():  # PIL warns above its limit and raises above twice it: both refuse
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            found = re.search(r"\((\d+) pixels\)", str(err))
            pixels = int(found.group(1)) if found else None
            raise DataError(f"it has {f'{pixels:,}' if pixels else 'more'} pixels, above the limit of "
                            f"{Image.MAX_IMAGE_PIXELS:,} that guards against decompression bombs; if you trust "
                            f"the file, raise the limit: {PIXEL_LIMIT}={pixels or 'PIXELS'}") from None
        except Exception as err:  # not an image, or a header PIL's plugins cannot parse
            raise DataError(str(err) or type(err).__name__) from None


def _apply_pixel_limit() -> None:
    """PIL's limit from PIXEL_LIMIT, when set (read at each open: DataLoader workers see it too)."""
    given = os.environ.get(PIXEL_LIMIT, "").strip()
    if not given:
        return
    limit = int(given) if given.isdigit() else 0
    if limit <= 0:
        raise ConfigError(f"{PIXEL_LIMIT}={given!r} is not a positive whole number of pixels. Set it to the "
                          f"largest image's width times height, e.g. {PIXEL_LIMIT}=200000000, or unset it.")
    Image.MAX_IMAGE_PIXELS = limit


@dataclass
class Unreadable:
    """The files found unusable while one data set is read: each is skipped, then one warning counts
    them and names a few; under `strict` the first is refused instead, by name."""

    strict: bool
    found: dict[Path | str, str] = field(default_factory=dict)
    """What was skipped (a file, or an image inside one: "train.tfrecord, record 7") and why."""

    def usable(self, path: Path, convert: bool = True) -> bool:
        """Whether `path` decodes (see image_problem); if not, it is noted, or refused under strict."""
        reason = image_problem(path, convert)
        if reason is not None:
            self.skip(path, reason)
        return reason is None

    def skip(self, path: Path | str, reason: str) -> None:
        if self.strict:
            raise DataError(f"{str(path)!r} is not a readable image: {reason} (--strict). Remove or replace it, "
                            "or drop --strict to skip such files with a warning.")
        self.found[path] = reason

    def warn(self, where: Path) -> None:
        """One warning for all the skipped files, if any."""
        if not self.found:
            return
        named = [f"{_under(path, where)} ({reason})" for path, reason in list(self.found.items())[:SHOWN]]
        if len(self.found) > SHOWN:
            named.append(f"{len(self.found) - SHOWN} more")
        log.warning("skipped %d unreadable or non-image files in %s: %s; --strict makes this an error",
                    len(self.found), where, "; ".join(named))


def _under(path: Path | str, where: Path) -> str:
    if isinstance(path, str):
        return path
    return str(path.relative_to(where)) if path.is_relative_to(where) else str(path)
