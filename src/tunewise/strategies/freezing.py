"""The functional core of every strategy: freeze, unfreeze, groups, and the BatchNorm policy.

Freezing means `requires_grad=False` and out of the optimizer, or (for schedules that must
not flip `requires_grad` mid-run, as under DDP) a learning rate of exactly zero. BatchNorm
policy: a norm layer none of whose parameters train is kept in eval mode, so its running
statistics stay the pretrained ones; `set_train_mode` enforces that every time the model trains.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from tunewise.errors import ConfigError

if TYPE_CHECKING:
    from tunewise.tasks import TaskModel


def _timm_norms() -> tuple[type, ...]:
    from timm import layers

    names = ("RmsNorm", "RmsNorm2d", "SimpleNorm", "SimpleNorm2d")
    return tuple(getattr(layers, n) for n in names if hasattr(layers, n))


NORM_TYPES = (_BatchNorm, _InstanceNorm, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, *_timm_norms())


def is_norm(module: nn.Module) -> bool:
    """A normalization layer: torch's and timm's, or a model's own class named so (transformers
    writes one per architecture: LlamaRMSNorm, Qwen2RMSNorm, T5LayerNorm)."""
    return isinstance(module, NORM_TYPES) or type(module).__name__.endswith(("RMSNorm", "LayerNorm"))


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def unfreeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(True)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def is_frozen(module: nn.Module) -> bool:
    """True when no parameter of `module` trains: it is then a fixed function of its input."""
    return not any(p.requires_grad for p in module.parameters())


def backbone_groups(model: TaskModel) -> list[list[nn.Parameter]]:
    """The backbone's parameters by layer group, input to output (a TaskModel's layer_groups)."""
    named = dict(model.backbone.named_parameters())
    return [[named[n] for n in group if n in named] for group in model.layer_groups]


def unfreeze_last_groups(model: TaskModel, count: int) -> None:
    """Freeze the backbone, then unfreeze its last `count` layer groups."""
    freeze(model.backbone)
    for group in backbone_groups(model)[len(model.layer_groups) - count:] if count else []:
        for p in group:
            p.requires_grad_(True)


def check_group_count(knob: str, value: int, model: TaskModel, low: int = 1) -> None:
    """Raise ConfigError unless low <= value <= the number of layer groups."""
    groups = len(model.layer_groups)
    if not isinstance(value, int) or not low <= value <= groups:
        raise ConfigError(f"{knob}={value} is out of range: this backbone has {groups} "
                          f"{'layer group' if groups == 1 else 'layer groups'}, so {knob} must be in {low}..{groups}.")


def zero_rate_parameters(optimizer: torch.optim.Optimizer | None) -> set[int]:
    """ids of parameters whose optimizer group is masked (`scale` 0): in the optimizer, not trained."""
    if optimizer is None:
        return set()
    return {id(p) for g in optimizer.param_groups if g.get("scale", 1.0) == 0 for p in g["params"]}


def set_train_mode(model: nn.Module, masked: Iterable[int] = (), keep_statistics: bool = False) -> None:
    """model.train(), except BatchNorm layers none of whose parameters train.

    A BatchNorm without affine parameters follows the block that holds it.

    Args:
        masked: ids of parameters that require grad but sit at a zero rate (count as frozen).
        keep_statistics: every BatchNorm stays in eval mode (its affine parameters still train):
            normalisation keeps the pretrained running statistics instead of re-estimating
            them from the training batches (what LP-FT needs, see its card).
    """
    masked = set(masked)
    modules = dict(model.named_modules())

    def frozen(module: nn.Module) -> bool:
        return all(not p.requires_grad or id(p) in masked for p in module.parameters())

    model.train()
    for name, module in modules.items():
        own = getattr(module, "set_norm_statistics", None)  # a backbone of another framework's layers (keras:)
        if own is not None:
            own(lambda params: not keep_statistics and not all(not p.requires_grad or id(p) in masked
                                                                for p in params))
        if isinstance(module, _BatchNorm):
            owner = module if module.affine else modules[name.rpartition(".")[0]]
            if keep_statistics or frozen(owner):
                module.eval()
