"""`bitfit`: only the backbone's bias terms train, with the head.

Ben Zaken et al. 2022 (https://arxiv.org/abs/2106.10199). BatchNorm layers whose bias trains
run in train mode (their statistics adapt); all others keep their pretrained statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from tunewise.errors import ConfigError
from tunewise.strategies import STRATEGIES, Strategy
from tunewise.strategies.freezing import freeze

if TYPE_CHECKING:
    from tunewise.tasks import TaskModel


@STRATEGIES.add
@dataclass(frozen=True)
class BitFit(Strategy):
    name: ClassVar[str] = "bitfit"
    default_lr: ClassVar[float] = 1e-3
    rate_range: ClassVar[tuple[float, float]] = (3e-4, 1e-2)
    search_order: ClassVar[int | None] = 1

    def check_model(self, model: TaskModel) -> None:
        if not any(is_bias(name) for name, _ in model.backbone.named_parameters()):  # it would be linear_probe
            raise ConfigError("bitfit found no bias to train in this backbone (Llama-style generators have none; "
                              "detection and segmentation freeze a pretrained CNN's BatchNorm, and its convolutions "
                              "have no bias). Use linear_probe, partial or lora.")

    def prepare(self, model: TaskModel) -> None:
        self.check_model(model)
        freeze(model.backbone)
        for name, p in model.backbone.named_parameters():
            if is_bias(name):
                p.requires_grad_(True)


def is_bias(name: str) -> bool:
    """A bias term by its parameter name: torch's `.bias`; Keras's `layer/bias`, and `layer/beta` (its
    normalization layers' bias, which torch also names bias)."""
    return name.rsplit(".", 1)[-1] == "bias" or name.endswith(("/bias", "/beta"))
