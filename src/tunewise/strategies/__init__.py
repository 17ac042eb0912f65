"""Fine-tuning strategies, registered by name. Each is a frozen dataclass of its knobs."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import torch
from torch import nn

from tunewise.errors import ConfigError
from tunewise.registry import Registry
from tunewise.strategies.freezing import trainable_parameters

STRATEGIES: Registry = Registry("strategy")


@dataclass(frozen=True)
class Strategy:
    """Base: every hook is a no-op, and the optimizer sees every trainable parameter at `lr`."""

    name: ClassVar[str] = "base"
    pretrained: ClassVar[bool] = True
    """Whether the backbone starts from pretrained weights."""
    default_lr: ClassVar[float] = 1e-3
    """Peak learning rate when the user gives none."""
    keep_norm_statistics: ClassVar[bool] = False
    """Whether BatchNorm keeps its pretrained running statistics while the backbone trains."""

    def knobs(self) -> dict:
        """The knobs as plain values (JSON-ready), to record and to rebuild the strategy."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(self) if f.init}

    def prepare(self, model: nn.Module) -> None:
        """Freeze parts or inject adapters, before the optimizer is built."""

    def param_groups(self, model: nn.Module, lr: float) -> list[dict]:
        """What the optimizer sees, at which peak rate (`lr`), times an optional `scale`.

        The schedule sets each group's rate every step to lr * schedule(step) * scale; a
        strategy may change `scale` in `on_epoch_start` (0 masks a group without leaving
        the optimizer).
        """
        return [{"params": trainable_parameters(model), "lr": lr}]

    def on_epoch_start(self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        """Schedules; derive state from `epoch` alone so that a resumed run does the same."""

    def finalize(self, model: nn.Module) -> None:
        """Make the model plain for export (merge adapters)."""

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """A regularising term added to the loss, or None."""
        return None


def get_strategy(name: str, **knobs) -> Strategy:
    """The strategy `name` with `knobs` set (`get_strategy("partial", k=3)`).

    Raises:
        TunewiseError: unknown name or knob; the message lists the allowed ones.
    """

    cls = STRATEGIES.get(name)
    allowed = [f.name for f in fields(cls) if f.init]
    unknown = sorted(set(knobs) - set(allowed))
    if unknown:
        raise ConfigError(f"strategy {name!r} has no knob {', '.join(unknown)}; its knobs: "
                          f"{', '.join(allowed) or 'none'}.")
    for f in fields(cls):
        if f.name in knobs and isinstance(f.default, int | float) and not isinstance(f.default, bool):
            value = knobs[f.name]
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ConfigError(f"strategy {name!r} knob {f.name} must be a number, got {value!r}.")
    return cls(**knobs)


# Registration happens on import: every strategy file binds its name here.
from tunewise.strategies import (  # noqa: E402, F401
    bitfit,
    full,
    gradual_unfreeze,
    l2sp,
    linear_probe,
    llrd,
    lora,
    lp_ft,
    norm_only,
    partial,
    scratch,
)
