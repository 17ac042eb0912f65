"""The full grid (every strategy x 3 rates, every run to the end) against `tunewise search`.

Same backbone, data, epochs, rates and seed. Prints the cost of each (training-epoch
equivalents and seconds), each one's winner and the gap between their best validation scores,
and the cost of one full fine-tune for scale (the issue's target: the search costs at most
2.5x one full fine-tune and finds a winner within 0.5 points of the grid's best).

    python bench/search_vs_grid.py                       # pkg:efficientnet_lite0, textile, CPU-sized
    python bench/search_vs_grid.py --image-size 0 --max-train-per-class 0 --epochs 10   # full size
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tunewise import DataConfig, TrainConfig, fit
from tunewise.errors import ConfigError, one_line
from tunewise.strategies import default_strategies
from tunewise.study import SearchConfig, search
from tunewise.study.tiers import rates as search_rates


def run_grid(model: str, data: DataConfig, train: TrainConfig, strategies: list[str], rates: int, out: Path):
    rows = []
    for strategy in strategies:
        for lr in search_rates(strategy, rates):
            try:
                record = fit(model, data, strategy, train=TrainConfig(**{**vars(train), "lr": lr}), test=False,
                             out=out / f"{strategy}-{lr:.3g}")
            except ConfigError as err:  # refused on this backbone (vera on a CNN): the search has no such arm
                print(f"{strategy}: refused: {one_line(err)}")
                break
            rows.append({"strategy": strategy, "lr": lr, "val": record.val_score, "compute": record.compute,
                         "seconds": record.seconds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pkg:efficientnet_lite0")
    parser.add_argument("--data", default="textile")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rates", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=128, help="0: the backbone's own size")
    parser.add_argument("--max-train-per-class", type=int, default=100, help="0: all images")
    parser.add_argument("--budget", default="10epochs", help="the search's budget")
    parser.add_argument("--strategies", default=",".join(default_strategies()))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    data = DataConfig(data=args.data, image_size=args.image_size or None,
                      max_train_per_class=args.max_train_per_class or None)
    train = TrainConfig(epochs=args.epochs, patience=None, seed=0)
    strategies = args.strategies.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        grid = run_grid(args.model, data, train, strategies, args.rates, Path(tmp) / "grid")
        grid_seconds = time.perf_counter() - started
        started = time.perf_counter()
        config = SearchConfig(strategies=tuple(strategies), epochs=args.epochs, rates=args.rates, seeds=1,
                              finalists=1, scratch=False, budget=args.budget)
        board = search(args.model, data, config, train=train, out=Path(tmp) / "search")
        search_seconds = time.perf_counter() - started

    best = max(grid, key=lambda r: r["val"])
    one_full = next(r for r in grid if r["strategy"] == "full") if "full" in strategies else None
    grid_compute = sum(r["compute"] for r in grid)
    unit = one_full["compute"] if one_full else args.epochs
    found = board.arms[0]
    gap = 100 * (best["val"] - found.mean)
    print(f"\n{args.model} on {args.data}: {len(strategies)} strategies x {args.rates} rates, {args.epochs} epochs")
    print(f"{'':8}{'runs':>6}{'epoch-eq':>10}{'x one full':>12}{'seconds':>9}  winner (val acc %)")
    print(f"{'grid':8}{len(grid):>6}{grid_compute:>10.1f}{grid_compute / unit:>12.1f}{grid_seconds:>9.0f}  "
          f"{best['strategy']} lr {best['lr']:.2g} ({100 * best['val']:.1f})")
    ran = sum(t.state != "skipped" for t in board.trials)
    print(f"{'search':8}{ran:>6}{board.compute:>10.1f}{board.compute / unit:>12.1f}"
          f"{search_seconds:>9.0f}  {found.strategy} lr {found.lr:.2g} ({100 * found.mean:.1f})")
    ratio = board.compute / grid_compute
    print(f"search / grid cost: {ratio:.2f} (compute), {search_seconds / grid_seconds:.2f} (time)")
    print(f"gap to the grid's best: {gap:.1f} points (target <= 0.5); search cost {board.compute / unit:.1f}x one "
          f"full fine-tune (target <= 2.5)")
    if args.json:
        Path(args.json).write_text(json.dumps({"grid": grid, "grid_seconds": grid_seconds,
                                               "search_compute": board.compute, "search_seconds": search_seconds,
                                               "search_winner": [found.strategy, found.lr, found.mean],
                                               "gap_points": gap}, indent=2))


if __name__ == "__main__":
    main()
