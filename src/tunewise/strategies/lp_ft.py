"""`lp_ft`: a linear probe first (on cached features), then full fine-tuning from that head.

Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution" (https://arxiv.org/abs/2202.10054): starting full fine-tuning from a
trained head, at a lower rate, distorts the pretrained features less than from a random head.
fit() runs the probe as a linear_probe run in the `probe/` subfolder and loads its best head;
the state before fine-tuning (the probe's) is a candidate for the best epoch, so LP-FT never ends
below its own probe.

BatchNorm keeps its pretrained running statistics during the fine-tune phase. The probe's head
was fitted to features normalised with those statistics; re-estimating them from small,
augmented batches of a new domain moves every feature at once. Measured on textile
(EfficientNet-Lite0, 180 training images): one pass in train mode with no weight update at all
took the probe's 72.7% validation accuracy to 25.0%, which is the collapse the fine-tune phase
showed. LayerNorm (text models) has no running statistics, which is why text never collapsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from tunewise.errors import ConfigError
from tunewise.strategies import STRATEGIES, Probe, Strategy
from tunewise.strategies.linear_probe import LinearProbe

if TYPE_CHECKING:
    from tunewise.tasks import TaskModel


@STRATEGIES.add
@dataclass(frozen=True)
class LPFT(Strategy):
    """Args:
        probe_epochs: epochs of the linear probe (cheap: the features are cached).
        probe_lr: peak rate of the probe.
    """

    probe_epochs: int = 10
    probe_lr: float = 3e-3
    name: ClassVar[str] = "lp_ft"
    default_lr: ClassVar[float] = 1e-4
    keep_norm_statistics: ClassVar[bool] = True
    rate_range: ClassVar[tuple[float, float]] = (1e-5, 3e-4)
    grace_epochs: ClassVar[int] = 2
    knob_grid: ClassVar[tuple[dict, ...]] = ({"probe_epochs": 10}, {"probe_epochs": 5})
    search_order: ClassVar[int | None] = 9

    def check(self) -> None:
        if not isinstance(self.probe_epochs, int) or self.probe_epochs < 1:
            raise ConfigError(f"probe_epochs must be a positive integer, got {self.probe_epochs!r}.")
        if not self.probe_lr > 0:
            raise ConfigError(f"probe_lr must be positive, got {self.probe_lr!r}.")

    def warm_start(self, model: TaskModel, probe: Probe) -> bool:
        model.head.load_state_dict(probe(LinearProbe(), self.probe_epochs, self.probe_lr))
        return True
