"""What a search compares and how much it may spend: SearchConfig and its checks."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from tunewise.errors import ConfigError
from tunewise.strategies import default_strategies

log = logging.getLogger("tunewise")


@dataclass(frozen=True)
class SearchConfig:
    """What a search compares and how much it may spend."""

    strategies: tuple[str, ...] = field(default_factory=default_strategies)
    """Candidate strategies (the scratch baseline is separate: `scratch`)."""
    budget: str | None = None
    """Total cost: `Nepochs` (training-epoch equivalents) or a time (`90s`, `30m`, `2h`); None:
    the finals and the scratch baseline, plus every strategy in full at its middle rate and through
    its grace epochs at its other rates, so every strategy is measured (`default_budget`); a smaller
    budget warns which strategies it cannot measure."""
    epochs: int = 10
    """Epochs of an explore or final run."""
    rates: int = 3
    """Learning rates tried per strategy, on a log grid over its range."""
    seeds: int = 3
    """Seeds of each finalist (and of the scratch baseline)."""
    finalists: int = 2
    """Strategies re-run over seeds."""
    scratch: bool = True
    """Compare with the same architecture trained from random weights."""
    scratch_epochs: int | None = None
    """Epochs of the scratch baseline; None: twice `epochs` (it starts slower)."""
    workers: int = 1
    """Processes on this machine sharing the study."""
    keep_models: int = 2
    """With several models: how many of the ranking's best go on to fine-tuning."""
    knobs: bool = False
    """Also search each strategy's knobs (LoRA rank, llrd decay, partial's k, ...) on its `knob_grid`;
    off: every strategy at its default knobs."""

    @cached_property
    def limit(self) -> Budget:
        """`budget`, parsed once."""
        return Budget.parse(self.budget)


@dataclass(frozen=True)
class Budget:
    """A search's budget, parsed: training-epoch equivalents, or seconds of wall-clock time."""

    unit: Literal["epochs", "seconds"]
    amount: float

    @classmethod
    def parse(cls, text: str | None) -> Budget:
        """`30epochs` -> Budget("epochs", 30.0); `90s`, `30m`, `2h` -> Budget("seconds", ...)."""
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(epochs?|s|m|h)\s*", str(text))
        if not match:
            raise ConfigError(f"--budget {text!r} is not a budget. Use epochs (20epochs) or a time (90s, 30m, 2h).")
        value, unit = float(match.group(1)), match.group(2)
        if value == 0:
            raise ConfigError(f"--budget {text!r} gives nothing to spend. Give a positive amount: epochs (20epochs) "
                              "or a time (90s, 30m, 2h).")
        if unit.startswith("epoch"):
            return cls("epochs", value)
        return cls("seconds", value * {"s": 1, "m": 60, "h": 3600}[unit])


def strategy_list(text: str) -> tuple[str, ...]:
    return default_strategies() if text == "all" else tuple(s.strip() for s in text.split(",") if s.strip())
