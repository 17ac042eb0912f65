"""`norm_only`: only normalization layers' affine parameters train, with the head.

Frankle et al. 2021, "Training BatchNorm and only BatchNorm" (https://arxiv.org/abs/2003.00152);
the same for LayerNorm in transformers. Those BatchNorm layers run in train mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from tunewise.errors import ConfigError
from tunewise.strategies import STRATEGIES, Strategy
from tunewise.strategies.freezing import freeze, is_frozen, is_norm

if TYPE_CHECKING:
    from tunewise.tasks import TaskModel


@STRATEGIES.add
@dataclass(frozen=True)
class NormOnly(Strategy):
    name: ClassVar[str] = "norm_only"
    default_lr: ClassVar[float] = 1e-3
    rate_range: ClassVar[tuple[float, float]] = (3e-4, 1e-2)
    search_order: ClassVar[int | None] = 2

    def prepare(self, model: TaskModel) -> None:
        freeze(model.backbone)
        own = getattr(model.backbone, "norm_parameters", None)  # a backbone of another framework's layers
        for p in own() if own is not None else (p for m in model.backbone.modules() if is_norm(m)
                                                  for p in m.parameters()):
            p.requires_grad_(True)
        if is_frozen(model.backbone):  # it would be linear_probe under another name
            raise ConfigError("norm_only found no normalization parameter to train in this backbone (detection "
                              "and segmentation freeze a pretrained CNN's BatchNorm). Use linear_probe, partial or "
                              "lora.")
