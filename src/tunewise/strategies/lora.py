"""`lora`: low-rank adapters on the backbone (through peft), a new head, both trained.

Hu et al. 2021 (https://arxiv.org/abs/2106.09685). On a transformers encoder, adapters go on
the attention projections peft knows for its architecture (BERT: query and value); elsewhere
on every dense layer of the backbone: each Linear (attention projections, MLPs) and each
ungrouped Conv2d (CNNs; depthwise convolutions are left alone); `target_modules` names others. `finalize` merges the
adapters, so the export is a plain model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from torch import nn

from tunewise.errors import ConfigError
from tunewise.strategies import STRATEGIES, Strategy

if TYPE_CHECKING:
    from tunewise.tasks import TaskModel


@STRATEGIES.add
@dataclass(frozen=True)
class LoRA(Strategy):
    """Args:
        r: rank of each adapter (>= 1).
        alpha: scaling numerator; the update is scaled by alpha / r.
        dropout: dropout on the adapter's input.
        target_modules: module names (or name suffixes) to adapt; None picks them.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None
    name: ClassVar[str] = "lora"
    default_lr: ClassVar[float] = 1e-3
    rate_range: ClassVar[tuple[float, float]] = (3e-4, 1e-2)
    knob_grid: ClassVar[tuple[dict, ...]] = ({"r": 8}, {"r": 4}, {"r": 16})
    search_order: ClassVar[int | None] = 3

    def check(self) -> None:
        if not isinstance(self.r, int) or self.r < 1:
            raise ConfigError(f"LoRA rank r must be a positive integer, got {self.r!r}.")
        if not 0 <= self.dropout < 1 or not self.alpha > 0:
            raise ConfigError(f"LoRA dropout must be in [0, 1) and alpha positive, got dropout={self.dropout!r}, "
                              f"alpha={self.alpha!r}.")

    def prepare(self, model: TaskModel) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        targets = self._targets(model.backbone)
        config = LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=list(targets))
        inject_adapter_in_model(config, model.backbone)  # only the lora_ parameters train

    def finalize(self, model: TaskModel) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        for name, module in list(model.backbone.named_modules()):
            if isinstance(module, BaseTunerLayer):
                module.merge()
                model.backbone.set_submodule(name, module.get_base_layer())

    def _targets(self, backbone: nn.Module) -> list[str]:
        candidates = adaptable_modules(backbone)
        if self.target_modules is None:
            if not candidates:
                raise ConfigError("this backbone has no Linear or Conv2d layer that LoRA can adapt.")
            return _attention_projections(backbone, candidates) or candidates
        given = (self.target_modules,) if isinstance(self.target_modules, str) else tuple(self.target_modules)
        matches = {t: [n for n in candidates if n == t or n.endswith("." + t)] for t in given}
        missing = [t for t, names in matches.items() if not names]
        if missing:
            known = sorted({n.rsplit(".", 1)[-1] for n in candidates})
            raise ConfigError(f"LoRA target_modules {missing} match no Linear or Conv2d layer of this backbone. "
                              f"Layer names there: {', '.join(known[:20])}.")
        return sorted({n for names in matches.values() for n in names})  # full names: peft matches suffixes


def _attention_projections(backbone: nn.Module, candidates: list[str]) -> list[str]:
    """A transformers encoder's attention projections, as peft names them per architecture
    (BERT: query and value), the placement of the LoRA paper."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as targets

    names = targets.get(getattr(backbone, "model_type", ""), [])  # "": no architecture peft knows
    return [n for n in candidates if n.rsplit(".", 1)[-1] in names]


def adaptable_modules(backbone: nn.Module) -> list[str]:
    """Linear layers (outside nn.MultiheadAttention, whose forward bypasses them) and Conv2d
    layers with groups == 1."""
    inside_attention = {f"{n}.{c}" for n, m in backbone.named_modules()
                        if isinstance(m, nn.MultiheadAttention) for c, _ in m.named_children()}
    return [n for n, m in backbone.named_modules()
            if (isinstance(m, nn.Linear) and n not in inside_attention)
            or (isinstance(m, nn.Conv2d) and m.groups == 1)]
