"""No code from data files (issue 13, item 1), as a user meets it: a crafted CIFAR batch under
--data-root, a crafted checkpoint in a run folder, a crafted .pth given as --weights or put in
torch's download cache. Each payload writes a marker file when plain pickle/torch.load reads it (the
tests check that first); through tunewise the marker is never written, and the command exits 2 with
one line naming the file.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from hardening import assert_user_error, run, snapshot

FIT = ("fit", "--model", "timm:test_resnet", "--strategy", "full", "--epochs", "1", "--batch-size", "12",
       "--image-size", "32", "--num-workers", "0", "--device", "cpu")
SETTINGS = FIT[3:]  # all but the model


class Payload:
    """Pickles as `os.system("touch MARKER")`: what a crafted file does as it loads."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def _really_runs(read, marker: Path) -> None:
    """The crafted file is a real attack: the plain reader runs it."""
    read()
    assert marker.exists(), "the payload did not run under the plain reader: the test proves nothing"
    marker.unlink()


# --- CIFAR python batches ------------------------------------------------------------------------

LAYOUT = {  # folder, training files, test files, meta file, meta key, labels key, classes
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta",
                "label_names", "labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_label_names", "fine_labels", 100),
}


def write_cifar(root: Path, name: str = "cifar10", per_class: int = 2, protocol: int = 2) -> Path:
    """A trimmed but honest copy in torchvision's layout: small batches in the real format."""
    folder, train, test, meta, meta_key, labels_key, classes = LAYOUT[name]
    (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for file in train + test:
        labels = rng.permutation([c for c in range(classes) for _ in range(per_class)]).tolist()
        batch = {"batch_label": f"{file} of the copy", labels_key: labels,
                 "data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8),
                 "filenames": [f"{file}_{i}.png" for i in range(len(labels))]}
        (root / folder / file).write_bytes(pickle.dumps(batch, protocol=protocol))
    (root / folder / meta).write_bytes(pickle.dumps({meta_key: [f"class_{c}" for c in range(classes)]},
                                                     protocol=protocol))
    return root


@pytest.mark.parametrize(("name", "file"), [
    ("cifar10", "data_batch_1"), ("cifar10", "data_batch_5"), ("cifar10", "test_batch"), ("cifar10", "batches.meta"),
    ("cifar100", "train"), ("cifar100", "meta"),
])
def test_a_crafted_cifar_batch_runs_nothing(capsys, tmp_path, tiny_weights, name, file):
    root = write_cifar(tmp_path / "data", name, per_class=1)
    marker = tmp_path / "MARKER"
    crafted = root / LAYOUT[name][0] / file
    crafted.write_bytes(pickle.dumps({"data": Payload(marker), "labels": [0]}, protocol=2))
    _really_runs(lambda: pickle.loads(crafted.read_bytes()), marker)
    before = snapshot(root)

    outcome = run(capsys, *FIT, "--weights", tiny_weights, "--data", name, "--data-root", root,
                  "--out", tmp_path / "run")
    assert_user_error(outcome, [str(crafted), "refused", "posix.system", "could run code", "nothing in it was run"])
    assert not marker.exists()
    assert snapshot(root) == before
    assert not (tmp_path / "run").exists()  # failed before its first checkpoint: nothing left


def test_a_trimmed_honest_cifar_copy_still_trains(capsys, tmp_path, tiny_weights):
    """Pickled as Python writes by default (protocol 2 copies: tests/unit/test_data.py; every protocol
    at the reader: tests/unit/test_no_code_execution.py)."""
    root = write_cifar(tmp_path / "data", per_class=2, protocol=pickle.HIGHEST_PROTOCOL)
    outcome = run(capsys, *FIT, "--weights", tiny_weights, "--data", "cifar10", "--data-root", root,
                  "--out", tmp_path / "run")
    assert outcome.code == 0, outcome.err
    assert (tmp_path / "run" / "record.json").is_file()


def test_a_cifar_batch_of_another_shape_is_one_line(capsys, tmp_path, tiny_weights):
    root = write_cifar(tmp_path / "data", per_class=1)
    wrong = root / "cifar-10-batches-py" / "test_batch"
    wrong.write_bytes(pickle.dumps({"data": np.zeros((10, 28 * 28), np.uint8), "labels": list(range(10))}))
    outcome = run(capsys, *FIT, "--weights", tiny_weights, "--data", "cifar10", "--data-root", root,
                  "--out", tmp_path / "run")
    assert_user_error(outcome, [str(wrong), "3072 values per image", "(10, 784)"])


# --- checkpoints in a run folder, --weights, torch's download cache -------------------------------

def _crafted_checkpoint(path: Path, marker: Path) -> Path:
    import torch

    torch.save({"conv1.weight": torch.zeros(1), "extra": Payload(marker)}, path)
    _really_runs(lambda: torch.load(path, weights_only=False), marker)
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, image_folder, tiny_weights) -> Path:
    """A completed one-epoch run: a template each test copies and tampers with."""
    from tunewise.cli import main

    out = tmp_path_factory.mktemp("template") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(out.parent / "home"))  # caches: never the user's
        assert main([str(a) for a in (*FIT, "--weights", tiny_weights, "--data", image_folder, "--out", out)]) == 0
    assert {"best.pt", "checkpoint.pt", "settings.json"} <= {p.name for p in out.iterdir()}
    return out


@pytest.mark.parametrize("file", ["checkpoint.pt", "best.pt"])
def test_resuming_a_run_with_a_crafted_checkpoint_runs_nothing(capsys, tmp_path, finished_run, file):
    """Resume reads checkpoint.pt first; a run whose epochs are done reads best.pt to finish."""
    run_dir = shutil.copytree(finished_run, tmp_path / "run")
    marker = tmp_path / "MARKER"
    crafted = _crafted_checkpoint(run_dir / file, marker)
    outcome = run(capsys, "fit", "--resume", run_dir)
    assert_user_error(outcome, [str(crafted), "refused", "posix.system", "nothing in it was run",
                                "replaced or damaged"])
    assert not marker.exists()
    assert crafted.is_file()  # the user's evidence is left where it was


def test_evaluating_a_run_never_reads_its_checkpoints(capsys, tmp_path, finished_run, image_folder):
    """evaluate and predict read the export (safetensors), not the pickled checkpoints beside it."""
    run_dir = shutil.copytree(finished_run, tmp_path / "run")
    marker = tmp_path / "MARKER"
    for file in ("checkpoint.pt", "best.pt"):
        _crafted_checkpoint(run_dir / file, marker)
    assert run(capsys, "evaluate", run_dir, "--data", image_folder, "--split", "val").code == 0
    image = next(Path(image_folder).rglob("*.png"))
    assert run(capsys, "predict", run_dir, image).code == 0
    assert not marker.exists()


@pytest.mark.parametrize("flag", ["--weights", "--model"])
def test_a_crafted_pth_runs_nothing(capsys, tmp_path, image_folder, flag):
    marker = tmp_path / "MARKER"
    crafted = _crafted_checkpoint(tmp_path / "resnet.pth", marker)
    if flag == "--weights":
        args = ("--model", "timm:test_resnet", "--weights", crafted)
    else:  # a weights file as the model: its architecture is read from the model.json beside it
        (tmp_path / "model.json").write_text('{"arch": "timm:test_resnet"}')
        args = ("--model", crafted)
    outcome = run(capsys, "fit", *args, *SETTINGS, "--data", image_folder, "--out", tmp_path / "run")
    assert_user_error(outcome, [str(crafted), "refused", "posix.system", ".safetensors"])
    assert not marker.exists()


def test_a_crafted_file_in_torchs_download_cache_runs_nothing(capsys, tmp_path, image_folder, monkeypatch):
    """torchvision loads its cached preset with torch.hub's default, weights_only=False; the hash in
    the file name is checked on download only, so a file put there under that name is loaded as is."""
    import torch
    import torchvision

    for name in ("TORCH_HOME", "XDG_CACHE_HOME", "TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
        monkeypatch.delenv(name, raising=False)
    url = torchvision.models.get_model_weights("mobilenet_v2").DEFAULT.url
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    assert str(cache).startswith(str(tmp_path))  # the test's HOME, never the user's
    cache.mkdir(parents=True)
    marker = tmp_path / "MARKER"
    crafted = _crafted_checkpoint(cache / Path(url).name, marker)
    outcome = run(capsys, "fit", "--model", "torchvision:mobilenet_v2", *SETTINGS, "--data", image_folder,
                  "--out", tmp_path / "run")
    assert_user_error(outcome, [str(crafted), "refused", "posix.system", "delete it"])
    assert not marker.exists()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ
