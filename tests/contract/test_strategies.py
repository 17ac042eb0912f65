"""Every strategy x tiny CNNs (BatchNorm; timm and torchvision), a tiny ViT and a tiny BERT (LayerNorm).

After real optimizer steps: exactly the intended parameters changed, the frozen ones are
bit-identical, frozen BatchNorm statistics did not move, and the optimizer holds every
trainable parameter once, at its documented rate.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import write_tiny_bert
from torch import nn
from torch.nn import functional as F

from tunewise.backbones import load_backbone
from tunewise.config import TrainConfig
from tunewise.errors import ConfigError
from tunewise.strategies import STRATEGIES, get_strategy, refusals
from tunewise.strategies.freezing import NORM_TYPES, set_train_mode, zero_rate_parameters
from tunewise.tasks import get_task
from tunewise.train import _optimizer, set_rates

MODELS = ["timm:test_resnet", "timm:test_vit", "torchvision:mobilenet_v3_small", "tiny_bert"]
LR = 1e-2


@functools.cache
def _tiny_bert() -> str:
    return "hf:" + str(write_tiny_bert(Path(tempfile.mkdtemp(prefix="tiny_bert-"))))


def resolve(model_name: str) -> str:
    return _tiny_bert() if model_name == "tiny_bert" else model_name


def sample_inputs(model_name: str, batch: int = 4):
    """Random images, or random token ids with a full attention mask."""
    if model_name == "tiny_bert":
        ids = torch.randint(5, 30, (batch, 12))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return torch.randn(batch, 3, 32, 32)


def build(model_name: str, strategy):
    torch.manual_seed(0)
    backbone = load_backbone(resolve(model_name), pretrained=False)
    with torch.no_grad():  # like pretrained weights: timm zero-inits each block's last norm scale,
        for module in backbone.model.modules():  # which would block every gradient inside the block
            if isinstance(module, NORM_TYPES) and getattr(module, "weight", None) is not None:
                module.weight.uniform_(0.5, 1.5)
    net = get_task("image_classification").build_model(backbone, ["a", "b", "c"])
    net.model_name = model_name
    strategy.prepare(net)
    return net


def classification_loss(net) -> torch.Tensor:
    x, y = sample_inputs(net.model_name), torch.randint(0, 3, (4,))
    return F.cross_entropy(net(x), y)


def take_steps(net, strategy, epoch: int = 0, steps: int = 3, batch_loss=classification_loss):
    """Real optimizer steps as fit() takes them; `batch_loss(net)` draws a batch and returns its loss."""
    optimizer = _optimizer(strategy.param_groups(net, LR), TrainConfig())
    strategy.on_epoch_start(net, optimizer, epoch)
    torch.manual_seed(1)
    for _ in range(steps):
        set_train_mode(net, masked=zero_rate_parameters(optimizer), keep_statistics=strategy.keep_norm_statistics)
        loss = batch_loss(net)
        penalty = strategy.penalty(net)
        loss = loss if penalty is None else loss + penalty
        optimizer.zero_grad()
        loss.backward()
        set_rates(optimizer, 1.0)
        optimizer.step()
    return optimizer


def norm_parameter_names(net) -> set[str]:
    return {f"backbone.{m}.{p}" if m else f"backbone.{p}"
            for m, module in net.backbone.named_modules() if isinstance(module, NORM_TYPES)
            for p, _ in module.named_parameters(recurse=False)}


def last_groups(net, count: int) -> set[str]:
    return {f"backbone.{n}" for group in net.layer_groups[len(net.layer_groups) - count:] for n in group}


def expected_trainable(name: str, net) -> set[str]:
    everything = {n for n, _ in net.named_parameters()}
    head = {n for n in everything if n.startswith("head.")}
    return {
        "linear_probe": head,
        "full": everything, "scratch": everything, "llrd": everything, "l2sp": everything, "lp_ft": everything,
        "partial": head | last_groups(net, 2),
        "gradual_unfreeze": head,  # epoch 0: the head alone
        "bitfit": head | {n for n in everything if n.startswith("backbone.") and n.endswith(".bias")},
        "norm_only": head | norm_parameter_names(net),
        "lora": head | {n for n in everything if "lora_" in n},
        "dora": head | {n for n in everything if "lora_" in n},  # lora_A, lora_B and the magnitude vector
        "ia3": head | {n for n in everything if "ia3_l" in n},
        "vera": head | {n for n in everything if "vera_lambda_" in n},
    }[name]


LINEAR_ONLY = {"vera"}
"""Strategies that adapt Linear layers alone: refused on a backbone that has none."""
ADAPTERS = ("lora", "dora", "ia3", "vera")
CNNS = ("timm:test_resnet",)
"""Backbones without a Linear layer (torchvision's MobileNetV3 keeps its classifier's first Linear
as the last layer of its features, which VeRA adapts)."""


def test_every_registered_strategy_is_covered():
    assert set(STRATEGIES.names()) == {"linear_probe", "full", "partial", "gradual_unfreeze", "llrd", "lp_ft",
                                       "bitfit", "norm_only", "lora", "dora", "ia3", "vera", "l2sp", "scratch"}


@pytest.mark.parametrize("model_name", MODELS)
def test_what_a_search_leaves_out_is_exactly_what_prepare_refuses(model_name):
    """`refusals` (check_model: a search leaves those arms out before any trial) and `prepare` agree on
    every strategy: a strategy file that refuses in prepare must say so in check_model too."""
    left_out = set(refusals(STRATEGIES.names(), build(model_name, get_strategy("linear_probe"))))
    refused = set()
    for name in STRATEGIES.names():
        try:
            build(model_name, get_strategy(name))
        except ConfigError:
            refused.add(name)
    assert left_out == refused
    assert refused == (LINEAR_ONLY if model_name in CNNS else set())


@pytest.mark.parametrize("model_name", CNNS)
@pytest.mark.parametrize("name", sorted(LINEAR_ONLY))
def test_a_linear_only_adapter_is_refused_on_a_cnn_with_what_to_use(name, model_name):
    with pytest.raises(ConfigError, match="no Linear layer that VeRA can adapt.*try lora or dora"):
        build(model_name, get_strategy(name))


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("name", sorted(STRATEGIES.names()))
def test_exactly_the_intended_parameters_change(name, model_name):
    if name in LINEAR_ONLY and model_name in CNNS:
        pytest.skip("refused on a CNN: test_a_linear_only_adapter_is_refused_on_a_cnn_with_what_to_use")
    if name == "vera" and model_name == "torchvision:mobilenet_v3_small":
        pytest.skip("its one Linear feeds a Hardswish that random 32 px features leave almost all at zero "
                    "gradient: lambda_d's gradient is proportional to lambda_b, which starts at zero and "
                    "barely moves in 3 steps (merge and reload are tested below)")
    strategy = get_strategy(name)
    net = build(model_name, strategy)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = take_steps(net, strategy)

    expected = expected_trainable(name, net)
    assert expected, "a strategy must train something"
    for param_name, p in net.named_parameters():
        changed = not torch.equal(before[param_name], p.detach())
        assert changed == (param_name in expected), f"{param_name}: changed={changed}"

    # the optimizer: every parameter that trains is in exactly one group, no frozen one is in any
    in_groups = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert len(in_groups) == len(set(in_groups))
    active = {id(p) for g in optimizer.param_groups if g.get("scale", 1.0) != 0 for p in g["params"]}
    assert active == {id(p) for n, p in net.named_parameters() if n in expected}

    # BatchNorm statistics of layers that do not train stay the pretrained ones
    for module_name, module in net.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            own = {f"{module_name}.{n}" for n, _ in module.named_parameters()}
            if not own & expected:
                assert torch.equal(before[f"{module_name}.running_mean"], module.running_mean), module_name
                assert torch.equal(before[f"{module_name}.running_var"], module.running_var), module_name


@pytest.mark.parametrize("model_name", MODELS)
def test_llrd_rates_decay_from_the_head(model_name):
    strategy = get_strategy("llrd", decay=0.5)
    net = build(model_name, strategy)
    groups = strategy.param_groups(net, LR)
    assert groups[0]["lr"] == LR and {id(p) for p in groups[0]["params"]} == {id(p) for p in net.head.parameters()}
    for depth, group in enumerate(groups[1:], start=1):
        assert group["lr"] == pytest.approx(LR * 0.5**depth)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in net.parameters())  # each parameter exactly once


@pytest.mark.parametrize("model_name", MODELS)
def test_gradual_unfreeze_schedule_is_a_function_of_the_epoch(model_name):
    strategy = get_strategy("gradual_unfreeze", epochs_per_stage=2)
    net = build(model_name, strategy)
    head = {id(p) for p in net.head.parameters()}
    groups = len(net.layer_groups)
    for epoch in range(2 * groups + 3):
        # a fresh optimizer stands for a resumed run: nothing but the epoch decides
        optimizer = _optimizer(strategy.param_groups(net, LR), TrainConfig())
        strategy.on_epoch_start(net, optimizer, epoch)
        active = {id(p) for g in optimizer.param_groups if g["scale"] != 0 for p in g["params"]}
        named = dict(net.named_parameters())
        expected = head | {id(named[n]) for n in last_groups(net, min(groups, epoch // 2))}
        assert active == expected, f"epoch {epoch}"


def test_l2sp_penalty_equals_a_hand_computation():
    strategy = get_strategy("l2sp", alpha=0.3, beta=0.7)
    net = build("timm:test_resnet", strategy)
    pretrained = {n: p.detach().clone() for n, p in net.backbone.named_parameters()}
    head_only = 0.7 / 2 * sum((p**2).sum().item() for p in net.head.parameters())
    assert strategy.penalty(net).item() == pytest.approx(head_only)  # at the pretrained weights
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    pull = sum(((p - pretrained[n]) ** 2).sum().item() for n, p in net.backbone.named_parameters())
    head = sum((p**2).sum().item() for p in net.head.parameters())
    assert strategy.penalty(net).item() == pytest.approx(0.3 / 2 * pull + 0.7 / 2 * head, rel=1e-5)


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("name", ADAPTERS)
def test_adapters_merged_and_reloaded_give_the_same_logits(name, model_name, tmp_path):
    if name in LINEAR_ONLY and model_name in CNNS:
        pytest.skip("refused on a CNN")
    knobs = {"r": 4} if name in ("lora", "dora") else {}
    strategy = get_strategy(name, **knobs)
    net = build(model_name, strategy)
    take_steps(net, strategy)
    net.eval()
    x = sample_inputs(model_name, batch=2)
    with torch.no_grad():
        adapted = net(x)
    torch.save(net.state_dict(), tmp_path / "adapter_and_head.pt")

    reloaded = build(model_name, get_strategy(name, **knobs))  # fresh adapters, then the saved ones
    reloaded.load_state_dict(torch.load(tmp_path / "adapter_and_head.pt", weights_only=True))
    strategy.finalize(net)
    assert not any(tag in n for n, _ in net.named_parameters() for tag in ("lora_", "ia3_", "vera_"))
    with torch.no_grad():
        assert torch.allclose(reloaded.eval()(x), adapted, atol=1e-5)
        assert torch.allclose(net(x), adapted, atol=1e-5)
    # merged, the backbone has the architecture's own names again: it loads into a plain one
    plain = load_backbone(resolve(model_name), pretrained=False).model
    plain.load_state_dict(net.backbone.state_dict())


@pytest.mark.parametrize("name,knobs,match", [
    ("partial", {"k": 99}, r"k=99 is out of range: this backbone has \d+ layer groups"),
    ("partial", {"k": 0}, "k=0 is out of range"),
    ("llrd", {"decay": -0.5}, r"decay must be in \(0, 1\]"),
    ("lora", {"r": 0}, "rank r must be a positive integer"),
    ("lora", {"target_modules": ("nonexistent",)}, "match no Linear or Conv2d layer.*Layer names there: .*qkv"),
    ("gradual_unfreeze", {"epochs_per_stage": 0}, "epochs_per_stage must be a positive integer"),
    ("l2sp", {"alpha": -1.0}, "alpha and beta must be >= 0"),
    ("lp_ft", {"probe_epochs": 0}, "probe_epochs must be a positive integer"),
    ("lp_ft", {"probe_lr": 0.0}, "probe_lr must be positive"),
    ("partial", {"k": 1.5}, "k=1.5 is out of range"),
    ("lora", {"dropout": 1.5}, r"dropout must be in \[0, 1\)"),
    ("dora", {"r": 0}, "rank r must be a positive integer"),
    ("ia3", {"target_modules": ("nonexistent",)}, "IA3 target_modules .* match no Linear or Conv2d layer"),
    ("vera", {"r": 0}, "VeRA rank r must be a positive integer"),
    ("vera", {"target_modules": ("nonexistent",)}, "VeRA target_modules .* match no Linear layer.*qkv"),
])
def test_knobs_out_of_range_name_the_knob_and_the_range(name, knobs, match):
    with pytest.raises(ConfigError, match=match):
        build("timm:test_vit", get_strategy(name, **knobs))


def test_unknown_knob_lists_the_strategy_knobs():
    with pytest.raises(ConfigError, match="has no knob rank; its knobs: r, alpha, dropout, target_modules"):
        get_strategy("lora", rank=4)


def test_lora_target_names_adapt_exactly_the_layers_they_match():
    strategy = get_strategy("lora", target_modules=("qkv",))
    net = build("timm:test_vit", strategy)
    adapted = {n.split(".lora_")[0] for n, _ in net.backbone.named_parameters() if "lora_" in n}
    assert adapted and all(n.endswith(".qkv") for n in adapted)


def test_batchnorm_without_affine_parameters_follows_its_block():
    from tunewise.strategies.freezing import freeze

    block = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False))
    model = nn.Sequential(block, nn.Conv2d(4, 4, 1))
    set_train_mode(model)
    assert block[1].training  # its block trains: statistics adapt
    freeze(block)
    set_train_mode(model)
    assert not block[1].training  # its block is frozen: statistics stay
