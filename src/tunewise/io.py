"""Atomic file writes: a reader (or a resumed run) never sees half a file."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from tunewise.errors import RunFolderError, TunewiseError, WriteError, write_error


def write_atomic(path: str | Path, write: Callable[[str], object]) -> None:
    """Call `write(tmp_path)`, flush the temporary file to disk, then rename it over `path`: a crash
    or a full disk leaves the previous complete file or none, never a torn one. What `write`
    returns (`Path.write_text`'s count, say) is ignored. A failed write is a WriteError naming
    `path`, with the free space when the disk may be full."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise write_error(path, err) from err
    os.close(fd)
    try:
        write(tmp)
        _shareable(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        free = shutil.disk_usage(path.parent).free  # measured before the partial file is removed
        Path(tmp).unlink(missing_ok=True)
        error = failed_write(path, err, free) if isinstance(err, Exception) else None
        if error is None:
            raise
        raise error from err


def _shareable(path: str) -> None:
    """The permissions of any new file (mkstemp makes 0600, and safetensors re-creates the file):
    results are for sharing."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def failed_write(path: Path, err: Exception, free: int) -> WriteError | None:
    """`err` as a WriteError naming `path`, or None when it is not a failed write. torch.save and
    safetensors report a full disk as errors of their own (torch's zip writer raises RuntimeErrors
    such as "file write failed" or "unexpected pos"), so a disk with almost nothing free when the
    write failed counts as full whatever the error says."""
    if isinstance(err, TunewiseError):
        return None
    if isinstance(err, OSError):
        return write_error(path, err)
    if free > FULL_BELOW and not re.search(r"write failed|no space|storagefull", str(err), re.IGNORECASE):
        return None  # a fault of its own
    before = f"; the previous copy took {path.stat().st_size / 2**20:.1f} MiB" if path.is_file() else ""
    return WriteError(f"cannot write {str(path)!r}: the disk is full ({free / 2**20:.1f} MiB free when the write "
                      f"failed{before}; {type(err).__name__}). Free some space or write elsewhere.")


FULL_BELOW = 2**20
"""Free bytes under which a failed write is put down to a full disk."""


MARKER = ".tunewise"
"""The file that marks a folder as tunewise's own: only such a folder (or a new or empty one) is written into."""


def claim_folder(folder: str | Path, flag: str = "--out") -> Path:
    """`folder`, made ours to write in: new, empty, or one tunewise wrote. A folder of the user's
    own files is refused before a byte is written into it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{flag} {str(folder)!r} is a file, not a folder. Pass a new folder.")
    if folder.is_dir() and not is_ours(folder):
        found = sorted(p.name for p in folder.iterdir())
        raise RunFolderError(f"{flag} {str(folder)!r} holds files that tunewise did not write ({', '.join(found[:4])}"
                             f"{', ...' if len(found) > 4 else ''}); nothing was written to it. Pass a new or "
                             "empty folder.")
    if not (folder / MARKER).is_file():
        write_json(folder / MARKER, {"tool": "tunewise", "version": _version()})
    return folder


def is_ours(folder: Path) -> bool:
    """Empty, marked, or written by a tunewise from before the marker (its settings.json names a model)."""
    if (folder / MARKER).is_file() or not any(folder.iterdir()):
        return True
    try:
        return "model" in json.loads((folder / "settings.json").read_text()) or (folder / "ranking.json").is_file()
    except (OSError, ValueError, TypeError):
        return (folder / "ranking.json").is_file()


def _version() -> str:
    from tunewise import __version__

    return __version__


def file_safe(name: str) -> str:
    """A model name like `pkg:x`, `hf:org/model` or a path, as one file-name-safe word."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-.")


def default_run_dir(*parts: str, prefix: str = "") -> Path:
    """runs/<prefix><time>-<parts>, with a model name like `pkg:x` or a path made file-name safe."""
    slug = "-".join(file_safe(p)[-40:] for p in parts)
    return Path("runs") / f"{prefix}{datetime.now():%Y%m%d-%H%M%S}-{slug}"


def write_json(path: str | Path, obj: object) -> None:
    def dump(tmp: str) -> None:
        Path(tmp).write_text(json.dumps(obj, indent=2, default=str) + "\n")

    write_atomic(path, dump)


def append_jsonl(path: str | Path, obj: object) -> None:
    """One JSON line, flushed to disk: a killed run keeps every finished epoch's line."""
    with open(path, "a") as f:
        f.write(json.dumps(obj, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every complete line; a line cut short by a kill is dropped."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
