"""Fine-tuning strategies, registered by name. Each is a frozen dataclass of its knobs."""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from tunewise.errors import ConfigError
from tunewise.registry import Registry
from tunewise.strategies.freezing import trainable_parameters

if TYPE_CHECKING:
    from tunewise.tasks import TaskModel

STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


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
    head_only: ClassVar[bool] = False
    """Trains the head alone on a frozen backbone: its features are cached where the task allows,
    so a search charges it a third of an epoch."""

    # What a search needs: the rates it tries, how long before it may prune, which knobs it varies.
    rate_range: ClassVar[tuple[float, float]] = (1e-4, 3e-3)
    """The search's rates are log-spaced over this range (the middle one first)."""
    deep_head_rate_range: ClassVar[tuple[float, float] | None] = None
    """The range on tasks whose head is a whole network (detection, segmentation), when it differs."""
    grace_epochs: ClassVar[int] = 1
    """Epochs before the search's pruner may judge a run: slow starters get longer."""
    knob_grid: ClassVar[tuple[dict, ...]] = ()
    """With `--search-knobs`: knob settings around the default (the default first)."""
    search_order: ClassVar[int | None] = None
    """Place in the default search, cheapest first (a tight budget still sees every kind of arm);
    None: not searched unless named in `--strategies`."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ConfigError for a bad knob: runs when the strategy is made, before any data is read."""

    @classmethod
    def rates(cls, count: int, deep_head: bool = False) -> list[float]:
        """`count` rates log-spaced over the range, the middle one first."""
        low, high = (deep_head and cls.deep_head_rate_range) or cls.rate_range
        grid = np.geomspace(low, high, count).tolist() if count > 1 else [math.sqrt(low * high)]
        middle = len(grid) // 2
        return [float(f"{r:.3g}") for r in [grid[middle], *grid[:middle], *grid[middle + 1:]]]

    def warm_start(self, model: TaskModel, probe: Probe) -> bool:
        """Set the model's starting state before the first epoch; True makes that state a candidate
        for the best epoch. `probe(strategy, epochs, lr)` runs `strategy` in the run folder's
        `probe/` and returns its best head's weights (LP-FT)."""
        return False

    def knobs(self) -> dict:
        """The knobs as plain values (JSON-ready), to record and to rebuild the strategy."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(self) if f.init}

    def check_model(self, model: TaskModel) -> None:
        """Raise ConfigError where `model` cannot take this strategy, changing nothing: a search leaves such
        arms out rather than spend a trial on each. It refuses what `prepare` refuses (a strategy's
        `prepare` calls it; a contract test holds the two to the same answer on every test model)."""

    def prepare(self, model: TaskModel) -> None:
        """Freeze parts or inject adapters, before the optimizer is built."""

    def param_groups(self, model: TaskModel, lr: float) -> list[dict]:
        """What the optimizer sees, at which peak rate (`lr`), times an optional `scale`.

        The schedule sets each group's rate every step to lr * schedule(step) * scale; a
        strategy may change `scale` in `on_epoch_start` (0 masks a group without leaving
        the optimizer).
        """
        return [{"params": trainable_parameters(model), "lr": lr}]

    def on_epoch_start(self, model: TaskModel, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        """Schedules; derive state from `epoch` alone so that a resumed run does the same."""

    def finalize(self, model: TaskModel) -> None:
        """Make the model plain for export (merge adapters)."""

    def penalty(self, model: TaskModel) -> torch.Tensor | None:
        """A regularising term added to the loss, or None."""
        return None


Probe = Callable[[Strategy, int, float], dict[str, torch.Tensor]]
"""What `Strategy.warm_start` is handed: `probe(strategy, epochs, lr)` -> the best head's weights."""


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


def default_strategies() -> tuple[str, ...]:
    """What a search compares when `--strategies` is not given, cheapest first."""
    ranked = [cls for cls in map(STRATEGIES.get, STRATEGIES.names()) if cls.search_order is not None and cls.pretrained]
    return tuple(cls.name for cls in sorted(ranked, key=lambda cls: (cls.search_order, cls.name)))


def refusals(names: Iterable[str], model: TaskModel, knob_grid: bool = False) -> dict[str, str]:
    """The strategies among `names` that cannot fine-tune `model`, and why: with their default knobs, or
    with `knob_grid` at none of their knob grid's variants (a variant refused alone fails as its trial)."""
    found = {}
    for name in names:
        reasons = []
        for knobs in (STRATEGIES.get(name).knob_grid or ({},)) if knob_grid else ({},):
            try:
                get_strategy(name, **knobs).check_model(model)
            except ConfigError as err:
                reasons.append(str(err))
            else:
                break
        else:
            found[name] = reasons[0]
    return found


def in_search_order(names) -> list[str]:
    """`names` in the order a search runs them: cheapest first, then any others by name."""
    def rank(name: str) -> tuple:
        order = STRATEGIES.get(name).search_order
        return (order is None, order or 0, name)
    return sorted(names, key=rank)


# Registration happens on import: every module in this package registers its strategy, so a new
# strategy is one new file here.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
