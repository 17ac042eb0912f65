"""The proof that a TensorFlow user gets a model they can use: a keras: run's model.keras, loaded by
Keras on the TensorFlow backend in a process of its own, gives tunewise's outputs.

Slow: it needs tensorflow-cpu, which .ci/run installs after the default suite and runs this with
`pytest -m slow -k tensorflow`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_keras_cnn, write_timm_lite0

from tunewise import DataConfig, TrainConfig, fit
from tunewise.export import load_model
from tunewise.strategies import get_strategy

pytestmark = pytest.mark.slow

TENSORFLOW_SIDE = """
import sys
import numpy as np
import keras
assert keras.backend.backend() == "tensorflow", keras.backend.backend()
model = keras.saving.load_model(sys.argv[1])
np.save(sys.argv[3], np.asarray(model(np.load(sys.argv[2]), training=False)))
"""


def both_outputs(run: Path, x: torch.Tensor, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """On images `x` (B, 3, H, W): the outputs of `run`'s model as tunewise loads it, and of its
    model.keras loaded by Keras on TensorFlow in a process of its own."""
    model, _ = load_model(run)
    with torch.no_grad():
        ours = model(x).numpy()
    np.save(folder / "x.npy", x.permute(0, 2, 3, 1).numpy())
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", TENSORFLOW_SIDE, str(run / "model.keras"), str(folder / "x.npy"),
                           str(folder / "y.npy")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return ours, np.load(folder / "y.npy")


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_tensorflow_loads_the_keras_export_with_tunewises_outputs(image_folder, tmp_path, strategy):
    cnn = write_keras_cnn(tmp_path / "cnn.keras")
    run = tmp_path / "run"
    fit(f"keras:{cnn}", DataConfig(data=str(image_folder)), get_strategy(strategy), out=run, test=False,
        train=TrainConfig(epochs=1, batch_size=8, lr=1e-2, patience=None))
    ours, theirs = both_outputs(run, torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)), tmp_path)
    assert theirs.shape == ours.shape and np.abs(theirs - ours).max() < 1e-5


def test_tensorflow_computes_the_fine_tuned_lite0_port_as_tunewise_does(image_folder, tmp_path):
    """The real EfficientNet-Lite0 weights (a TensorFlow port) from a timm folder, converted by KerasHub with
    TensorFlow's padding and epsilon set on its layers, fine-tuned, exported: TensorFlow runs model.keras
    to tunewise's outputs, so the padding and epsilon reach a TensorFlow user."""
    lite0 = write_timm_lite0(tmp_path / "lite0")
    run = tmp_path / "run"
    fit(f"keras:{lite0}", DataConfig(data=str(image_folder), image_size=64), "full", out=run, test=False,
        train=TrainConfig(epochs=1, batch_size=8, lr=1e-3, patience=None))
    ours, theirs = both_outputs(run, torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)), tmp_path)
    assert theirs.shape == ours.shape and np.abs(theirs - ours).max() < 1e-5 * max(1.0, np.abs(ours).max())
