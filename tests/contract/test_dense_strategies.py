"""Every strategy on detection and segmentation models (a timm and a torchvision CNN backbone).

As for classification: after real optimizer steps exactly the intended parameters changed.
And the detection rule on top: the backbone's BatchNorm is frozen (running statistics and
affine values as pretrained) under every strategy, full fine-tuning included.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_strategies import expected_trainable
from test_strategies import take_steps as steps_with

from tunewise.backbones import load_backbone
from tunewise.errors import ConfigError
from tunewise.strategies import STRATEGIES, get_strategy
from tunewise.strategies.freezing import NORM_TYPES
from tunewise.tasks import get_task

MODELS = ["timm:test_resnet", "torchvision:resnet18"]
TASKS = ["object_detection", "semantic_segmentation"]
FCOS = "object_detection/fcos"  # the second detector, on the strategies the issue names
SIZE, CLASSES = 64, ["a", "b", "c"]


def build(task_name: str, model_name: str, strategy):
    """Random weights standing in for pretrained ones (BatchNorm frozen), except for scratch."""
    torch.manual_seed(0)
    backbone = load_backbone(model_name, pretrained=False)
    backbone = replace(backbone, preprocess=backbone.preprocess.at_size(SIZE), pretrained=strategy.pretrained)
    with torch.no_grad():  # like pretrained weights: timm zero-inits each block's last norm scale,
        for module in backbone.model.modules():  # which would block every gradient inside the block
            if isinstance(module, NORM_TYPES) and getattr(module, "weight", None) is not None:
                module.weight.uniform_(0.5, 1.5)
    name, _, detector = task_name.partition("/")
    task = get_task(name, **({"detector": detector} if detector else {}))
    net = task.build_model(backbone, CLASSES)
    strategy.prepare(net)
    return net


def batch(task_name: str):
    """Two images; boxes (detection, classes shifted past the background) or masks."""
    images = torch.rand(2, 3, SIZE, SIZE)
    if task_name == "semantic_segmentation":
        return images, torch.randint(0, len(CLASSES), (2, SIZE, SIZE))
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 20.0, 60.0, 44.0]]),
                "labels": torch.tensor([1, 3])} for _ in range(2)]
    return {"images": list(images), "targets": targets}, targets


def take_steps(task_name: str, net, strategy):
    """Two optimizer steps, as the classification contract takes them, on this task's loss."""
    task = get_task(task_name.split("/")[0])

    def batch_loss(net):
        inputs, targets = batch(task_name)
        return task.loss(net(inputs), targets)

    return steps_with(net, strategy, steps=2, batch_loss=batch_loss)


@pytest.mark.parametrize(("task_name", "model_name", "name"),
                         [(task, "timm:test_resnet", name) for task in TASKS for name in sorted(STRATEGIES.names())]
                         + [(task, "torchvision:resnet18", name) for task in TASKS
                            for name in ("linear_probe", "partial", "full")]
                         + [(FCOS, "timm:test_resnet", name) for name in ("linear_probe", "partial", "full", "llrd")])
def test_exactly_the_intended_parameters_change_and_batchnorm_stays(name, task_name, model_name):
    strategy = get_strategy(name)
    if name in ("bitfit", "norm_only"):  # frozen BatchNorm and bias-free convolutions leave them nothing
        with pytest.raises(ConfigError, match="found no"):
            build(task_name, model_name, strategy)
        return
    if name == "vera":  # it adapts Linear layers alone, and a CNN backbone has none
        with pytest.raises(ConfigError, match="no Linear layer that VeRA can adapt"):
            build(task_name, model_name, strategy)
        return
    net = build(task_name, model_name, strategy)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    take_steps(task_name, net, strategy)

    expected = expected_trainable(name, net)
    for param_name, p in net.named_parameters():
        changed = not torch.equal(before[param_name], p.detach())
        assert changed == (param_name in expected), f"{param_name}: changed={changed}"
    batchnorm = [k for k in before if k.startswith("backbone.") and "running_" in k]
    assert batchnorm, "the backbone has BatchNorm state to check"
    if name == "scratch":  # random weights: BatchNorm trains and its statistics move
        assert not any(torch.equal(before[k], net.state_dict()[k]) for k in batchnorm if "running_var" in k)
        return
    for key in batchnorm:
        assert torch.equal(before[key], net.state_dict()[key]), key
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.backbone.modules())


@pytest.mark.parametrize("task_name", TASKS)
def test_lora_merges_into_a_plain_backbone_with_the_same_outputs(task_name):
    strategy = get_strategy("lora", r=4)
    net = build(task_name, "timm:test_resnet", strategy)
    take_steps(task_name, net, strategy)
    net.eval()
    inputs, _ = batch(task_name)
    inputs = inputs if task_name == "semantic_segmentation" else {"images": inputs["images"]}
    with torch.no_grad():
        adapted = net(inputs)
        strategy.finalize(net)
        merged = net(inputs)
    assert not any("lora_" in n for n, _ in net.named_parameters())
    if task_name == "semantic_segmentation":
        assert torch.allclose(merged, adapted, atol=1e-5)
    else:
        for a, m in zip(adapted, merged, strict=True):
            assert torch.allclose(a["scores"], m["scores"], atol=1e-4)
