"""Every strategy x a tiny BERT converted by KerasHub (keras:FOLDER), on Keras's torch backend: after real
optimizer steps exactly the intended Keras weights changed and the frozen ones are bit-identical."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import write_tiny_bert
from torch.nn import functional as F

from tunewise.backbones import load_backbone
from tunewise.errors import ConfigError
from tunewise.strategies import STRATEGIES, get_strategy
from tunewise.tasks import get_task

if importlib.util.find_spec("keras") is None or importlib.util.find_spec("keras_hub") is None:
    pytest.skip("keras: text backbones need: pip install 'tunewise[keras]' && pip install --no-deps keras-hub",
                allow_module_level=True)

from test_keras_strategies import changed_weights  # noqa: E402

REFUSED = {"dora": "no weight decomposition", "ia3": "IA3 puts peft adapters on torch layers",
           "vera": "VeRA puts peft adapters on torch layers"}
TRAINED = ("linear_probe", "gradual_unfreeze", "full", "scratch", "llrd", "l2sp", "lp_ft", "partial", "bitfit",
           "norm_only", "lora")
LAYERS = ("transformer_layer_0", "transformer_layer_1")
NORMS = {f"{n}/{w}" for n in ("embeddings_layer_norm", *(f"{layer}/{part}_layer_norm" for layer in LAYERS
                                                          for part in ("self_attention", "feedforward")))
         for w in ("gamma", "beta")}


@pytest.fixture(scope="module")
def tiny_keras_bert(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def build(folder, strategy):
    torch.manual_seed(0)
    backbone = load_backbone(f"keras:{folder}", pretrained=strategy.name != "scratch")
    net = get_task("text_classification").build_model(backbone, ["a", "b", "c"])
    strategy.prepare(net)
    return net


def text_loss(net) -> torch.Tensor:
    ids = torch.randint(5, 30, (4, 12))
    return F.cross_entropy(net({"input_ids": ids, "attention_mask": torch.ones_like(ids)}), torch.randint(0, 3, (4,)))


def expected(name: str, backbone: set[str]) -> set[str]:
    return {
        "linear_probe": set(), "gradual_unfreeze": set(),  # epoch 0: the head alone
        "full": backbone, "scratch": backbone, "llrd": backbone, "l2sp": backbone, "lp_ft": backbone,
        "partial": {n for n in backbone if n.startswith(("transformer_layer_1/", "pooled_dense/"))},  # 2 last groups
        "bitfit": {n for n in backbone if n.endswith(("/bias", "/beta"))},
        "norm_only": NORMS,
        "lora": {f"{layer}/self_attention_layer/{p}/lora_kernel_{ab}" for layer in LAYERS for p in ("query", "value")
                 for ab in "ab"},
    }[name]


def test_every_strategy_is_covered():
    assert set(STRATEGIES.names()) == set(TRAINED) | set(REFUSED)


@pytest.mark.parametrize("name", TRAINED)
def test_exactly_the_intended_keras_weights_change(tiny_keras_bert, name):
    strategy = get_strategy(name)
    changed, names = changed_weights(build(tiny_keras_bert, strategy), strategy, batch_loss=text_loss)
    head = {n for n in names if n.startswith("head.")}
    backbone = {n for n in names if n not in head and "lora_kernel" not in n}
    assert changed == head | expected(name, backbone)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_adapters_keras_layers_cannot_take_are_refused(tiny_keras_bert, name):
    with pytest.raises(ConfigError, match=REFUSED[name]):
        build(tiny_keras_bert, get_strategy(name))
