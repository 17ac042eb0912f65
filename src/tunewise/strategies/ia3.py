"""`ia3`: learned vectors that rescale activations of the frozen backbone (through peft), and a new head.

Liu et al. 2022, "(IA)^3" (https://arxiv.org/abs/2205.05638): one vector per adapted layer,
initialised to ones, multiplies the layer's output (its input, for the feed-forward layers peft
lists), so it trains far fewer parameters than LoRA. On a transformers encoder the targets are
the layers peft lists for its architecture (BERT: key, value and the output projections, the
feed-forward one scaled at its input); elsewhere every Linear and ungrouped Conv2d, each scaled
at its output (a Conv2d's output channels). `finalize` merges the vectors into the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from tunewise.strategies import STRATEGIES, Strategy
from tunewise.strategies.lora import adapter_targets, merge_adapters, peft_targets, suffixed

if TYPE_CHECKING:
    from tunewise.tasks import TaskModel


@STRATEGIES.add
@dataclass(frozen=True)
class IA3(Strategy):
    """Args:
        target_modules: module names (or name suffixes) to adapt; None picks them.
    """

    target_modules: tuple[str, ...] | None = None
    name: ClassVar[str] = "ia3"
    default_lr: ClassVar[float] = 3e-3
    rate_range: ClassVar[tuple[float, float]] = (1e-3, 3e-2)
    search_order: ClassVar[int | None] = 10

    def check_model(self, model: TaskModel) -> None:
        adapter_targets(model.backbone, self.target_modules, "IA3", "IA3")

    def prepare(self, model: TaskModel) -> None:
        from peft import IA3Config, inject_adapter_in_model

        targets = adapter_targets(model.backbone, self.target_modules, "IA3", "IA3")
        feedforward = suffixed(targets, peft_targets(model.backbone, "IA3", "FEEDFORWARD"))
        inject_adapter_in_model(IA3Config(target_modules=targets, feedforward_modules=feedforward), model.backbone)

    def finalize(self, model: TaskModel) -> None:
        merge_adapters(model.backbone)
