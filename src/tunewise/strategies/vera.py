"""`vera`: one pair of frozen random low-rank matrices shared by every adapted layer, and per-layer
scaling vectors trained on them (through peft), with a new head.

Kopiczko et al. 2024, "VeRA" (https://arxiv.org/abs/2310.11454): far fewer trainable parameters
than LoRA at a higher rank. peft's VeRA adapts Linear layers only, so a CNN backbone is refused
(use `lora`, `dora` or `ia3` there). On a transformers encoder the targets are the layers peft
lists for its architecture (BERT: query and value); elsewhere every Linear of the backbone.
The random matrices come from a fixed seed (peft's `projection_prng_key`). `finalize` merges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from tunewise.errors import ConfigError
from tunewise.strategies import STRATEGIES, Strategy
from tunewise.strategies.lora import adapter_targets, merge_adapters

if TYPE_CHECKING:
    from tunewise.tasks import TaskModel


@STRATEGIES.add
@dataclass(frozen=True)
class VeRA(Strategy):
    """Args:
        r: rank of the shared random matrices (>= 1; the paper's 256 costs no trained parameter).
        d_initial: initial value of the scaling vector on the rank (d), as peft's.
        target_modules: module names (or name suffixes) to adapt; None picks them.
    """

    r: int = 256
    d_initial: float = 0.1
    target_modules: tuple[str, ...] | None = None
    name: ClassVar[str] = "vera"
    default_lr: ClassVar[float] = 1e-2
    rate_range: ClassVar[tuple[float, float]] = (1e-3, 3e-2)
    search_order: ClassVar[int | None] = 11

    def check(self) -> None:
        if not isinstance(self.r, int) or self.r < 1:
            raise ConfigError(f"VeRA rank r must be a positive integer, got {self.r!r}.")
        if not self.d_initial > 0:
            raise ConfigError(f"VeRA d_initial must be positive, got {self.d_initial!r}.")

    def check_model(self, model: TaskModel) -> None:
        adapter_targets(model.backbone, self.target_modules, "VeRA", "VERA", linear_only=True)

    def prepare(self, model: TaskModel) -> None:
        from peft import VeraConfig
        from peft.tuners.vera import VeraModel

        targets = adapter_targets(model.backbone, self.target_modules, "VeRA", "VERA", linear_only=True)
        config = VeraConfig(r=self.r, d_initial=self.d_initial, target_modules=targets)
        VeraModel(model.backbone, config, "default")  # adapts the backbone in place; only vera_lambda_ trains

    def finalize(self, model: TaskModel) -> None:
        merge_adapters(model.backbone)
