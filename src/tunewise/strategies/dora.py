"""`dora`: LoRA with each adapted weight decomposed into a magnitude and a direction (through peft).

Liu et al. 2024 (https://arxiv.org/abs/2402.09353): the low-rank update changes the direction,
a trained per-output-channel magnitude scales it, which the paper reports closer to full
fine-tuning than LoRA at the same rank. Same targets, knobs and merge as `lora`; each step also
computes the adapted weights' norms, so it is slower than LoRA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tunewise.strategies import STRATEGIES
from tunewise.strategies.lora import LoRA


@STRATEGIES.add
@dataclass(frozen=True)
class DoRA(LoRA):
    """Args: as `lora` (r, alpha, dropout, target_modules)."""

    name: ClassVar[str] = "dora"
    use_dora: ClassVar[bool] = True
    knob_grid: ClassVar[tuple[dict, ...]] = ({"r": 8}, {"r": 4})
    search_order: ClassVar[int | None] = 12
