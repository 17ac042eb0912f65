"""Plain result records that round-trip through JSON: search, ranking and reports pass these."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from tunewise.io import write_json


@dataclass
class RunRecord:
    """What one fit() produced; `record.json` in its run folder."""

    run_dir: str
    model: str
    arch: str
    strategy: str
    task: str
    data: str
    classes: list[str]
    metric: str
    best_epoch: int
    epochs_run: int
    val: dict
    test: dict | None
    seconds: float
    trainable_params: int
    total_params: int
    train_config: dict = field(default_factory=dict)
    data_config: dict = field(default_factory=dict)
    strategy_knobs: dict = field(default_factory=dict)
    cached_features: bool = False

    @property
    def val_score(self) -> float:
        return float(self.val[self.metric])

    def save(self, path: str | Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> RunRecord:
        raw = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})
