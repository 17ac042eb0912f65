"""Every strategy x a tiny KerasHub EfficientNet (a keras:PRESET folder: convolutions without biases,
depthwise convolutions, BatchNormalization, a residual block), on Keras's torch backend: after real optimizer
steps exactly the intended Keras weights changed, and a BatchNormalization layer's moving statistics moved only
where its own scale or offset trained. The expectations come from the layers' types and names, not from the
strategies."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import write_keras_hub_efficientnet

from tunewise.backbones import load_backbone
from tunewise.errors import ConfigError
from tunewise.strategies import STRATEGIES, get_strategy

if importlib.util.find_spec("keras_hub") is None:
    pytest.skip("keras: presets need KerasHub: pip install --no-deps keras-hub", allow_module_level=True)

from test_keras_strategies import REFUSED, build, changed_weights  # noqa: E402

NAMES = ("linear_probe", "gradual_unfreeze", "full", "scratch", "llrd", "l2sp", "lp_ft", "partial", "bitfit",
         "norm_only", "lora")


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    return write_keras_hub_efficientnet(tmp_path_factory.mktemp("keras_hub") / "tiny")


@pytest.fixture(scope="module")
def layers(preset):
    """Each Keras layer with weights of the tiny EfficientNet: name -> (type, its trainable weights' names)."""
    net = load_backbone(f"keras:{preset}").model.net
    from tunewise.backbones.keras_source import leaf_layers

    return {layer.name: (type(layer).__name__, {w.path for w in layer.trainable_weights})
            for layer in leaf_layers(net) if layer.weights}


def expected(name: str, layers: dict) -> set[str]:
    """The Keras weights `name` trains (besides the head), from what the layers are."""
    every = {w for _, weights in layers.values() for w in weights}
    if name in ("linear_probe", "gradual_unfreeze"):  # epoch 0: the head alone
        return set()
    if name == "partial":  # the last two layer groups: block2 (the stride-2 stage) and top
        return {w for w in every if w.startswith(("block2", "top_"))}
    if name == "bitfit":  # the convolutions have no bias: the BatchNormalization offsets alone
        return {w for w in every if w.endswith("/beta")}
    if name == "norm_only":
        return {w for w in every if w.endswith(("/gamma", "/beta"))}
    if name == "lora":  # every ungrouped convolution: not the depthwise ones
        return {f"{layer}/lora_kernel_{ab}" for layer, (kind, _) in layers.items() if kind == "Conv2D" for ab in "ab"}
    return every


def statistics(trained: set[str], layers: dict) -> set[str]:
    """The moving statistics of each BatchNormalization layer whose scale or offset trains."""
    return {f"{layer}/{s}" for layer, (kind, weights) in layers.items() if kind == "BatchNormalization"
            and weights & trained for s in ("moving_mean", "moving_variance")}


def test_every_strategy_is_covered():
    assert set(STRATEGIES.names()) == set(NAMES) | set(REFUSED)


def test_the_expectations_know_every_kind_of_layer_with_weights(layers):
    assert {kind for kind, _ in layers.values()} == {"Conv2D", "DepthwiseConv2D", "BatchNormalization"}


@pytest.mark.parametrize("name", NAMES)
def test_exactly_the_intended_keras_hub_weights_change(preset, layers, name):
    strategy = get_strategy(name)
    changed, names = changed_weights(build(preset, strategy), strategy)
    head = {n for n in names if n.startswith("head.")}
    trained = expected(name, layers)
    moved = set() if strategy.keep_norm_statistics else statistics(trained, layers)  # LP-FT keeps them
    assert changed == head | trained | moved


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_adapters_keras_layers_cannot_take_are_refused(preset, name):
    with pytest.raises(ConfigError, match=REFUSED[name]):
        build(preset, get_strategy(name))
