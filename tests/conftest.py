"""Shared fixtures: tiny image folders and tiny models, all made locally (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ("red", "green", "blue")


def write_image_folder(root: Path, per_class: int = 12, size: int = 40, seed: int = 0) -> Path:
    """Class folders of noisy images whose dominant colour is the class: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, (size, size, 3))
            pixels[..., c] += 160
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A timm `test_resnet` state dict as safetensors: stands in for downloaded weights."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10)
    path = tmp_path_factory.mktemp("weights") / "test_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Feature and data caches go to the test's own folder, never the user's home."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
