"""`norm_only`: only normalization layers' affine parameters train, with the head.

Frankle et al. 2021, "Training BatchNorm and only BatchNorm" (https://arxiv.org/abs/2003.00152);
the same for LayerNorm in transformers. Those BatchNorm layers run in train mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from tunewise.errors import ConfigError
from tunewise.strategies import STRATEGIES, Strategy
from tunewise.strategies.freezing import freeze, is_norm

if TYPE_CHECKING:
    from torch import nn

    from tunewise.tasks import TaskModel


@STRATEGIES.add
@dataclass(frozen=True)
class NormOnly(Strategy):
    name: ClassVar[str] = "norm_only"
    default_lr: ClassVar[float] = 1e-3
    rate_range: ClassVar[tuple[float, float]] = (3e-4, 1e-2)
    search_order: ClassVar[int | None] = 2

    def check_model(self, model: TaskModel) -> None:
        if not norm_parameters(model.backbone):  # it would be linear_probe under another name
            raise ConfigError("norm_only found no normalization parameter to train in this backbone (detection "
                              "and segmentation freeze a pretrained CNN's BatchNorm). Use linear_probe, partial or "
                              "lora.")

    def prepare(self, model: TaskModel) -> None:
        self.check_model(model)
        freeze(model.backbone)
        for p in norm_parameters(model.backbone):
            p.requires_grad_(True)


def norm_parameters(backbone: nn.Module) -> list[nn.Parameter]:
    """The scale and offset of the backbone's normalization layers (its own list where its layers are
    another framework's)."""
    own = getattr(backbone, "norm_parameters", None)
    return own() if own is not None else [p for m in backbone.modules() if is_norm(m) for p in m.parameters()]
