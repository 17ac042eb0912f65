"""Benchmark: tunewise's data-loading workers on this machine, side by side in one process.

`fit()` with 0 loader worker processes against 2 (the old default everywhere, and still the default
beside a GPU), on the same data, model, epochs and seed: a linear probe (its one feature pass per split
is all the loading it does) and a full fine-tune (decoding and augmenting every image every epoch).
The results are identical whatever the workers (epochs.py draws every augmentation from (seed, epoch,
index)); only the time differs. On a CPU the training's own threads already take the cores (torch
uses one per core), so a worker decodes on a core training computes on: the question is whether
overlapping the decoding pays for that. Each setting runs --repeats times, the order reversed on
every other repeat (ABBA); the fastest of each is compared.

    python bench/loader_workers.py                    # textile, pkg:efficientnet_lite0, 150 per class
    python bench/loader_workers.py --model timm:resnet18 --weights r18.safetensors --data ./images
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from tunewise import DataConfig, TrainConfig, fit


def timed_fit(args, strategy: str, epochs: int, workers: int, folder: Path) -> tuple[float, float]:
    """Seconds of one cold fit (fresh feature cache and run folder), and its validation accuracy."""
    shutil.rmtree(folder, ignore_errors=True)
    train = TrainConfig(epochs=epochs, num_workers=workers, cache_dir=str(folder / "cache"), seed=0)
    start = time.perf_counter()
    record = fit(args.model, DataConfig(data=args.data, max_train_per_class=args.per_class), strategy,
                 train=train, out=folder / "run", test=False, weights=args.weights)
    return time.perf_counter() - start, record.val["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pkg:efficientnet_lite0")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--data", default="textile")
    parser.add_argument("--per-class", type=int, default=150, help="training images per class")
    parser.add_argument("--probe-epochs", type=int, default=5)
    parser.add_argument("--full-epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    logging.getLogger("tunewise").setLevel(logging.WARNING)
    print(f"start: load average {os.getloadavg()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
          f"{args.model} on {args.data} ({args.per_class} per class)", flush=True)
    runs: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="tunewise-workers-") as tmp:
        for repeat in range(args.repeats):
            for workers in (0, 2) if repeat % 2 == 0 else (2, 0):
                for strategy, epochs in (("linear_probe", args.probe_epochs), ("full", args.full_epochs)):
                    seconds, accuracy = timed_fit(args, strategy, epochs, workers, Path(tmp) / "fit")
                    runs.setdefault((strategy, workers), []).append(seconds)
                    print(f"  {strategy} ({epochs} epochs), {workers} workers: {seconds:.1f} s, val accuracy "
                          f"{accuracy:.3f}, load {os.getloadavg()[0]:.2f}", flush=True)
    for strategy in ("linear_probe", "full"):
        none, two = min(runs[strategy, 0]), min(runs[strategy, 2])
        print(f"{strategy}: 0 workers {none:.1f} s, 2 workers {two:.1f} s: 0 workers is {two / none:.2f}x as fast "
              f"(fastest of {args.repeats})")
    print(f"end: load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
