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
    use_dora: ClassVar[bool] = False
    """DoRA (dora.py) is LoRA with each weight decomposed into magnitude and direction."""

    def check(self) -> None:
        if not isinstance(self.r, int) or self.r < 1:
            raise ConfigError(f"LoRA rank r must be a positive integer, got {self.r!r}.")
        if not 0 <= self.dropout < 1 or not self.alpha > 0:
            raise ConfigError(f"LoRA dropout must be in [0, 1) and alpha positive, got dropout={self.dropout!r}, "
                              f"alpha={self.alpha!r}.")

    def check_model(self, model: TaskModel) -> None:
        if hasattr(model.backbone, "add_lora"):
            self._refuse_on_own_lora()
            model.backbone.lora_layers(self.target_modules)  # type: ignore[operator]
        else:
            adapter_targets(model.backbone, self.target_modules, "LoRA", "LORA")

    def prepare(self, model: TaskModel) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        if hasattr(model.backbone, "add_lora"):  # a backbone that adapts itself (keras: uses Keras's LoRA)
            self._refuse_on_own_lora()
            model.backbone.add_lora(self.r, self.alpha, self.target_modules)  # type: ignore[operator]
            return
        targets = adapter_targets(model.backbone, self.target_modules, "LoRA", "LORA")
        config = LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets,
                            use_dora=self.use_dora)
        inject_adapter_in_model(config, model.backbone)  # only the lora_ parameters train

    def finalize(self, model: TaskModel) -> None:
        merge = getattr(model.backbone, "merge_lora", None)
        merge() if merge is not None else merge_adapters(model.backbone)

    def _refuse_on_own_lora(self) -> None:
        if self.use_dora or self.dropout:
            raise ConfigError(f"this backbone adapts itself with plain LoRA (Keras's enable_lora), which has no "
                              f"{'weight decomposition (DoRA)' if self.use_dora else 'adapter dropout'}. Use "
                              f"{'lora' if self.use_dora else 'lora with dropout=0'}.")


def merge_adapters(backbone: nn.Module) -> None:
    """Merge every peft adapter into its layer and put the plain layer back: the export is the
    architecture's own model (LoRA, DoRA, IA3, VeRA)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(backbone.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            backbone.set_submodule(name, module.get_base_layer())


def adapter_targets(backbone: nn.Module, given: tuple[str, ...] | str | None, method: str, mapping: str,
                    linear_only: bool = False) -> list[str]:
    """The full names of the layers `method` adapts: those `given` names (or name suffixes) match
    among `adaptable_modules`, or by default the layers peft lists for a transformers encoder's
    architecture in its TRANSFORMERS_MODELS_TO_{mapping}_TARGET_MODULES_MAPPING (BERT for LoRA:
    query and value), else every candidate.

    Raises:
        ConfigError: no candidate at all, or a given name that matches none.
    """
    if hasattr(backbone, "add_lora"):
        raise ConfigError(f"{method} puts peft adapters on torch layers; this backbone's layers are its own (Keras "
                          "layers), which take lora only (their own enable_lora). Use lora.")
    candidates = adaptable_modules(backbone, linear_only)
    kinds = "Linear" if linear_only else "Linear or Conv2d"
    if not candidates:
        raise ConfigError(f"this backbone has no {kinds} layer that {method} can adapt"
                          f"{' (it adapts Linear layers only: try lora or dora on a CNN)' if linear_only else ''}.")
    if given is None:
        return suffixed(candidates, peft_targets(backbone, mapping)) or candidates
    names = (given,) if isinstance(given, str) else tuple(given)
    missing = [t for t in names if not suffixed(candidates, [t])]
    if missing:
        known = sorted({n.rsplit(".", 1)[-1] for n in candidates})
        raise ConfigError(f"{method} target_modules {missing} match no {kinds} layer of this backbone. "
                          f"Layer names there: {', '.join(known[:20])}.")
    return suffixed(candidates, names)  # full names: peft matches suffixes


def suffixed(candidates: list[str], names: list[str] | tuple[str, ...]) -> list[str]:
    """The candidates named by one of `names`, whole or as a suffix after a dot."""
    return sorted(n for n in candidates if any(n == t or n.endswith("." + t) for t in names))


def peft_targets(backbone: nn.Module, mapping: str, kind: str = "TARGET") -> list[str]:
    """What peft lists for this transformers encoder's architecture in
    TRANSFORMERS_MODELS_TO_{mapping}_{kind}_MODULES_MAPPING; none elsewhere."""
    import peft.utils

    table = getattr(peft.utils, f"TRANSFORMERS_MODELS_TO_{mapping}_{kind}_MODULES_MAPPING", {})
    return list(table.get(getattr(backbone, "model_type", ""), []))  # "": no architecture peft knows


def adaptable_modules(backbone: nn.Module, linear_only: bool = False) -> list[str]:
    """Linear layers (outside nn.MultiheadAttention, whose forward bypasses them) and, unless
    `linear_only`, Conv2d layers with groups == 1."""
    inside_attention = {f"{n}.{c}" for n, m in backbone.named_modules()
                        if isinstance(m, nn.MultiheadAttention) for c, _ in m.named_children()}
    return [n for n, m in backbone.named_modules()
            if (isinstance(m, nn.Linear) and n not in inside_attention)
            or (not linear_only and isinstance(m, nn.Conv2d) and m.groups == 1)]
