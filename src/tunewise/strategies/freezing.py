"""The functional core of every strategy: freeze, unfreeze, and the BatchNorm policy.

Freezing means `requires_grad=False` and out of the optimizer. BatchNorm policy: a norm
layer whose own parameters are all frozen is kept in eval mode, so its running statistics
stay the pretrained ones; `set_train_mode` enforces that every time the model trains.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


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


def set_train_mode(model: nn.Module) -> None:
    """model.train(), except frozen BatchNorm layers, which keep their running statistics."""
    model.train()
    for module in model.modules():
        if isinstance(module, _BatchNorm) and is_frozen(module):
            module.eval()
