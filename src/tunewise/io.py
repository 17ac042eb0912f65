"""Atomic file writes: a reader (or a resumed run) never sees half a file."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any


def write_atomic(path: str | Path, write: Callable[[str], object]) -> None:
    """Call `write(tmp_path)`, then rename the temporary file over `path`; what `write` returns
    (`Path.write_text`'s count, say) is ignored."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are for sharing like any file
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
