"""keras: backbones: a saved Keras 3 CNN fine-tuned on Keras's torch backend, exported as a .keras file
that Keras reloads with the same outputs."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_keras_cnn

from tunewise import DataConfig, TrainConfig, fit, predict
from tunewise.backbones import load_backbone
from tunewise.backbones.keras_source import keras_on_torch
from tunewise.errors import BackboneError
from tunewise.export import load_model
from tunewise.strategies import get_strategy

if importlib.util.find_spec("keras") is None:
    pytest.skip("keras: backbones need: pip install 'tunewise[keras]'", allow_module_level=True)
keras = keras_on_torch()


@pytest.fixture(scope="module")
def keras_cnn(tmp_path_factory) -> Path:
    return write_keras_cnn(tmp_path_factory.mktemp("keras") / "cnn.keras")


def test_a_keras_model_is_a_backbone_with_its_layers_and_head(keras_cnn):
    backbone = load_backbone(f"keras:{keras_cnn}")
    assert backbone.num_features == 16 and backbone.preprocess.input_size == 32
    assert [g[0].split("/")[0].rsplit(".", 1)[-1] for g in backbone.layer_groups] == ["conv1", "bn1", "conv2"]
    saved = keras.saving.load_model(keras_cnn)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ours = backbone.source_head(backbone.model.eval()(x))
        theirs = saved(x.permute(0, 2, 3, 1), training=False)
    assert torch.allclose(ours, theirs, atol=1e-5)
    named = load_backbone(f"keras:{keras_cnn}#pool@255")
    assert named.model.scale == 255.0 and named.num_features == 16


def test_fit_trains_the_keras_weights_and_exports_a_keras_file(keras_cnn, image_folder, tmp_path):
    fit(f"keras:{keras_cnn}", DataConfig(data=str(image_folder)), "full", out=tmp_path / "run", test=False,
        train=TrainConfig(epochs=2, batch_size=8, lr=1e-2, patience=None))
    exported = keras.saving.load_model(tmp_path / "run" / "model.keras")
    before = keras.saving.load_model(keras_cnn)
    assert not np.allclose(exported.get_layer("conv1").kernel.numpy(), before.get_layer("conv1").kernel.numpy())
    model, info = load_model(tmp_path / "run")
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - exported(x.permute(0, 2, 3, 1), training=False)).abs().max() < 1e-5
    image = next(Path(image_folder).rglob("*.png"))
    assert predict(tmp_path / "run", [image])[0]["label"] in info["classes"]
    assert 'keras.saving.load_model("model.keras")' in (tmp_path / "run" / "README.md").read_text()


def test_a_nested_frozen_feature_model_is_fine_tuned_layer_by_layer(image_folder, tmp_path):
    """Keras's transfer-learning shape, Model(inputs, Dense(base(inputs))) with base frozen when saved: its
    inner layers are the layer groups, `full` trains them, and model.keras matches tunewise's model."""
    nested = write_keras_cnn(tmp_path / "nested.keras", nested=True)
    backbone = load_backbone(f"keras:{nested}")
    assert [g[0].rsplit(".", 1)[-1].split("/")[0] for g in backbone.layer_groups] == ["conv1", "bn1", "conv2"]
    with pytest.raises(BackboneError, match="'conv2' is inside the nested model 'base'.*#base"):
        load_backbone(f"keras:{nested}#conv2")
    fit(f"keras:{nested}", DataConfig(data=str(image_folder)), "full", out=tmp_path / "run", test=False,
        train=TrainConfig(epochs=1, batch_size=8, lr=1e-2, patience=None))
    exported = keras.saving.load_model(tmp_path / "run" / "model.keras")
    before = keras.saving.load_model(nested).get_layer("base")
    conv1 = [layer for layer in exported._flatten_layers() if layer.name == "conv1"][0]
    assert not np.allclose(conv1.kernel.numpy(), before.get_layer("conv1").kernel.numpy())
    model, _ = load_model(tmp_path / "run")
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - exported(x.permute(0, 2, 3, 1), training=False)).abs().max() < 1e-5


def test_a_search_on_a_keras_model_leaves_out_peft_adapters_and_hands_back_a_keras_file(keras_cnn, image_folder,
                                                                                       tmp_path):
    from tunewise.study import SearchConfig, search

    config = SearchConfig(strategies=("linear_probe", "lora", "dora"), epochs=2, rates=1, seeds=1, finalists=1,
                          budget="8epochs", scratch=False)
    board = search(f"keras:{keras_cnn}", DataConfig(data=str(image_folder)), config, out=tmp_path / "search",
                   train=TrainConfig(batch_size=8, num_workers=0))
    assert {t.strategy for t in board.trials} == {"linear_probe", "lora"}
    assert "no weight decomposition (DoRA)" in board.unmeasured["dora"]
    winner = keras.saving.load_model(tmp_path / "search" / "model" / "model.keras")  # the winner, in model/
    assert winner.output.shape[-1] == 3


def test_a_keras_run_exports_to_onnx_through_the_parity_gate(keras_cnn, image_folder, tmp_path):
    from tunewise.cli import main

    fit(f"keras:{keras_cnn}", DataConfig(data=str(image_folder)), "linear_probe", out=tmp_path / "run", test=False,
        train=TrainConfig(epochs=1, batch_size=8, patience=None))
    assert main(["export", str(tmp_path / "run"), "--format", "onnx"]) == 0
    assert json.loads((tmp_path / "run" / "onnx" / "onnx.json").read_text())["parity"]["max_abs_diff"] < 1e-4


def test_a_frozen_batchnorm_keeps_its_moving_statistics(keras_cnn, image_folder, tmp_path):
    fit(f"keras:{keras_cnn}", DataConfig(data=str(image_folder)), get_strategy("partial", k=1), out=tmp_path / "run",
        test=False, train=TrainConfig(epochs=1, batch_size=8, patience=None))  # conv2 trains, bn1 is frozen
    exported = keras.saving.load_model(tmp_path / "run" / "model.keras")
    before = keras.saving.load_model(keras_cnn)
    bn = exported.get_layer("bn1")
    assert np.array_equal(bn.moving_mean.numpy(), before.get_layer("bn1").moving_mean.numpy())
    assert not np.allclose(exported.get_layer("conv2").kernel.numpy(), before.get_layer("conv2").kernel.numpy())


@pytest.mark.parametrize(("name", "says"), [
    ("{cnn}#nothing", "has no layer 'nothing' of its own; its layers: input_layer.*, conv1"),
    ("{cnn}#conv2", "have shape .*Name a pooled layer"),
    ("{cnn}@x", "the scale after @ must be a number"),
    ("{folder}/model.h5", "is not a .keras file"),
])
def test_bad_keras_models_are_named(keras_cnn, tmp_path, name, says):
    with pytest.raises(BackboneError, match=says):
        load_backbone("keras:" + name.format(cnn=keras_cnn, folder=tmp_path))


def test_another_keras_backend_is_refused_with_what_to_do(keras_cnn, monkeypatch):
    monkeypatch.setitem(os.environ, "KERAS_BACKEND", "tensorflow")
    with pytest.raises(BackboneError, match="KERAS_BACKEND is 'tensorflow'.*torch backend"):
        load_backbone(f"keras:{keras_cnn}")


def test_lora_trains_keras_adapters_only_and_exports_them_merged(keras_cnn, image_folder, tmp_path):
    """Keras's own LoRA (enable_lora): before the fit only adapters and the head train; after it the
    exported .keras file is plain layers whose kernels moved, and matches tunewise's model."""
    from tunewise.tasks import get_task

    backbone = load_backbone(f"keras:{keras_cnn}")
    net = get_task("image_classification").build_model(backbone, ["a", "b"])
    get_strategy("lora", r=2).prepare(net)
    training = sorted(n.split(".")[-1] for n, p in net.backbone.named_parameters() if p.requires_grad)
    assert training == [f"{layer}/lora_kernel_{ab}" for layer in ("conv1", "conv2") for ab in "ab"]

    fit(f"keras:{keras_cnn}", DataConfig(data=str(image_folder)), get_strategy("lora", r=2), out=tmp_path / "run",
        test=False, train=TrainConfig(epochs=2, batch_size=8, lr=1e-2, patience=None))
    exported = keras.saving.load_model(tmp_path / "run" / "model.keras")
    before = keras.saving.load_model(keras_cnn)
    conv1 = exported.get_layer("conv1")
    assert not conv1.lora_enabled and [w.name for w in conv1.weights] == ["kernel", "bias"]
    assert not np.allclose(conv1.kernel.numpy(), before.get_layer("conv1").kernel.numpy())
    assert np.array_equal(conv1.bias.numpy(), before.get_layer("conv1").bias.numpy())  # LoRA leaves biases
    model, _ = load_model(tmp_path / "run")
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - exported(x.permute(0, 2, 3, 1), training=False)).abs().max() < 1e-5


@pytest.mark.parametrize(("strategy", "says"), [
    ("dora", "plain LoRA .*no weight decomposition"),
    ("ia3", "IA3 puts peft adapters on torch layers.*Use lora"),
    (get_strategy("lora", target_modules=("pool",)), r"\['pool'\] name no layer it can adapt.*conv1, conv2"),
])
def test_adapters_keras_cannot_take_are_refused_with_the_reason(keras_cnn, image_folder, tmp_path, strategy, says):
    from tunewise.errors import ConfigError

    with pytest.raises(ConfigError, match=says):
        fit(f"keras:{keras_cnn}", DataConfig(data=str(image_folder)), strategy, out=tmp_path / "run",
            train=TrainConfig(epochs=1))


def test_the_feature_layer_flag_names_the_layer_in_the_run(keras_cnn, image_folder, tmp_path, capsys):
    from tunewise.cli import main

    run = tmp_path / "run"
    assert main(["fit", "--model", f"keras:{keras_cnn}", "--keras-feature-layer", "pool", "--data", str(image_folder),
                 "--strategy", "linear_probe", "--epochs", "1", "--out", str(run)]) == 0
    assert load_model(run)[1]["source"] == f"keras:{keras_cnn}#pool"
    assert main(["fit", "--model", "timm:test_resnet", "--keras-feature-layer", "pool"]) == 2
    assert "none of the models given is one" in capsys.readouterr().err


def test_older_keras_formats_are_named_with_how_to_resave(tmp_path):
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "saved_model.pb").write_bytes(b"")
    for name in (tmp_path / "saved", tmp_path / "model.h5"):
        with pytest.raises(BackboneError, match=r"is not a .keras file. Save the model with model.save"):
            load_backbone(f"keras:{name}")


@pytest.mark.parametrize("layer", ["dropout", "noise"])
def test_keras_random_layers_draw_from_torchs_generator(tmp_path, layer):
    """A Dropout made with seed=, and a GaussianNoise, draw from their own Keras seed states, which
    checkpoints do not hold; tunewise re-seeds them from torch's generator (seeded per epoch), so a
    resumed run repeats their draws: the same torch seed, the same draws; another, others."""
    inputs = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    random = keras.layers.Dropout(0.5, seed=3) if layer == "dropout" else keras.layers.GaussianNoise(1.0)
    drawn = keras.layers.Activation("linear", name="drawn")(random(keras.layers.Dense(16)(pooled)))
    keras.Model(inputs, keras.layers.Dense(2)(drawn)).save(tmp_path / "random.keras")
    module = load_backbone(f"keras:{tmp_path / 'random.keras'}#drawn").model.train()
    x = torch.rand(4, 3, 8, 8)

    def draw(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return module(x).detach()

    assert torch.equal(draw(0), draw(0)) and not torch.equal(draw(0), draw(1))
