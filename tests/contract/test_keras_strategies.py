"""Every strategy x a tiny Keras CNN (conv, BatchNormalization, conv, pooling, Dense; flat, and nested as
Keras's transfer-learning tutorial builds it), on Keras's torch backend: after real optimizer steps
exactly the intended Keras weights changed, frozen ones are bit-identical, and a BatchNormalization
layer's moving statistics move only when its own weights train."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import write_keras_cnn

from tunewise.backbones import load_backbone
from tunewise.errors import ConfigError
from tunewise.strategies import STRATEGIES, get_strategy, refusals
from tunewise.tasks import get_task

if importlib.util.find_spec("keras") is None:
    pytest.skip("keras: backbones need: pip install 'tunewise[keras]'", allow_module_level=True)

from test_strategies import take_steps  # noqa: E402

REFUSED = {"dora": "no weight decomposition", "ia3": "IA3 puts peft adapters on torch layers",
           "vera": "VeRA puts peft adapters on torch layers"}
TRAINABLE = {"conv1/kernel", "conv1/bias", "bn1/gamma", "bn1/beta", "conv2/kernel", "conv2/bias"}
EXPECTED = {
    "linear_probe": set(), "gradual_unfreeze": set(),  # epoch 0: the head alone
    "full": TRAINABLE, "scratch": TRAINABLE, "llrd": TRAINABLE, "l2sp": TRAINABLE, "lp_ft": TRAINABLE,
    "partial": {"bn1/gamma", "bn1/beta", "conv2/kernel", "conv2/bias"},  # the last 2 layer groups
    "bitfit": {"conv1/bias", "bn1/beta", "conv2/bias"},
    "norm_only": {"bn1/gamma", "bn1/beta"},
    "lora": {f"{layer}/lora_kernel_{ab}" for layer in ("conv1", "conv2") for ab in "ab"},
}


@pytest.fixture(scope="module", params=["flat", "nested"])
def keras_cnn(tmp_path_factory, request):
    """The CNN as one model, and as a frozen feature model nested in the saved one (Keras's tutorial shape)."""
    return write_keras_cnn(tmp_path_factory.mktemp("keras") / "cnn.keras", nested=request.param == "nested")


def build(model, strategy):
    """The keras: model at path `model` as an image classifier (3 classes), prepared for `strategy`."""
    torch.manual_seed(0)
    backbone = load_backbone(f"keras:{model}", pretrained=strategy.name != "scratch")
    net = get_task("image_classification").build_model(backbone, ["a", "b", "c"])
    net.model_name = "keras_cnn"  # take_steps draws 32 px images for it
    strategy.prepare(net)
    return net


def weight(name: str) -> str:
    """backbone.net._torch_params.conv1/kernel -> conv1/kernel; head parameters keep their names."""
    return name.rsplit(".", 1)[-1] if name.startswith("backbone.") else name


def changed_weights(net, strategy, **steps) -> tuple[set[str], set[str]]:
    """After take_steps (`steps`: its options), the weights that changed, and every weight's name, Keras
    names for the backbone's (`weight`)."""
    before = {weight(n): p.detach().clone() for n, p in net.named_parameters()}
    take_steps(net, strategy, **steps)
    after = {weight(n): p.detach() for n, p in net.named_parameters()}
    return {n for n in after if not torch.equal(before[n], after[n])}, set(after)


def test_every_strategy_is_covered():
    assert set(STRATEGIES.names()) == set(EXPECTED) | set(REFUSED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exactly_the_intended_keras_weights_change(keras_cnn, name):
    strategy = get_strategy(name)
    changed, names = changed_weights(build(keras_cnn, strategy), strategy)
    head = {n for n in names if n.startswith("head.")}
    trains_bn = {"bn1/gamma", "bn1/beta"} & EXPECTED[name] and not strategy.keep_norm_statistics  # LP-FT keeps them
    statistics = {"bn1/moving_mean", "bn1/moving_variance"} if trains_bn else set()
    assert changed == head | EXPECTED[name] | statistics


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_adapters_keras_layers_cannot_take_are_refused(keras_cnn, name):
    with pytest.raises(ConfigError, match=REFUSED[name]):
        build(keras_cnn, get_strategy(name))


def test_what_a_search_leaves_out_is_what_the_strategy_refuses(keras_cnn, tmp_path):
    """`refusals` (a search leaves those arms out before any trial) names exactly the strategies whose
    `prepare` refuses the model: on the CNN, and on one with neither a bias nor a normalization layer
    outside its head (bitfit and norm_only would be linear_probe under other names), and a single layer
    group (partial's default k=2 is out of range)."""
    from tunewise.backbones.keras_source import keras_on_torch

    keras = keras_on_torch()
    inputs = keras.Input((32, 32, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, use_bias=False)(inputs))
    keras.Model(inputs, keras.layers.Dense(3)(features)).save(bare := tmp_path / "bare.keras")
    for model, refused in [(keras_cnn, set(REFUSED)), (bare, {*REFUSED, "bitfit", "norm_only", "partial"})]:
        net = build(model, get_strategy("linear_probe"))
        assert set(refusals(STRATEGIES.names(), net)) == refused
        for name in STRATEGIES.names():
            try:
                build(model, get_strategy(name))
            except ConfigError:
                assert name in refused, name
            else:
                assert name not in refused, name
    net = build(bare, get_strategy("linear_probe"))  # searching knobs: partial's k=1 variant fits one group
    assert set(refusals(STRATEGIES.names(), net, knob_grid=True)) == {*REFUSED, "bitfit", "norm_only"}


def test_lora_target_names_are_checked_before_any_trial(keras_cnn):
    net = build(keras_cnn, get_strategy("linear_probe"))
    with pytest.raises(ConfigError, match=r"LoRA target_modules \['conv9'\] name no layer it can adapt.*conv1, conv2"):
        get_strategy("lora", target_modules=("conv9",)).check_model(net)
