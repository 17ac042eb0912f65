"""Benchmark: tunewise's linear probe against the classic naive PyTorch linear-probe loop.

What it measures, in one process, on the same backbone weights, the same train split and
the same test split, for the same number of epochs:

(a) naive: a pretrained model with every parameter frozen, a new ``nn.Linear`` head,
    ``CrossEntropyLoss``, ``Adam(head.parameters())`` at its default lr 1e-3, images through
    ``ToTensor()`` only, ``DataLoader(batch_size=32, shuffle=True, num_workers=0)``. Every
    epoch runs the frozen backbone over every training image again. Timed: the training
    epochs plus the test evaluation.
(b) tunewise: ``tunewise.fit(model, DataConfig(...), "linear_probe", optimizer="adam", ...)``
    with a cold feature cache, so the backbone runs once per split and the head trains on
    cached features; the best epoch is picked on val. Timed: the whole fit() call.

It prints each side's time and test accuracy, the speed ratio naive / tunewise, the accuracy
difference in points, and whether the targets hold (>= 7x faster, accuracy no more than
0.5 points below naive).

Run (2,000 offline textile images, 3 classes, EfficientNet-Lite0; minutes on a CPU):

    python bench/linear_probe_vs_naive.py
    python bench/linear_probe_vs_naive.py --max-train-per-class 100 --epochs 3   # quick look
    python bench/linear_probe_vs_naive.py --data cifar10 --model torchvision:resnet50  # network
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms

import tunewise
from tunewise import DataConfig
from tunewise.data import load_data

SPEED_TARGET = 7.0  # naive time / tunewise time
ACCURACY_SLACK = 0.5  # points tunewise may lose against naive


def run_naive(model_name: str, splits, epochs: int, batch_size: int) -> dict:
    """The classic loop, as a tutorial writes it; timed from the first epoch to the test result."""
    backbone = tunewise.load_backbone(model_name)  # same weights as fit() loads
    torch.manual_seed(0)
    head = nn.Linear(backbone.num_features, len(splits.classes))
    model = nn.Sequential(backbone.model, head)
    for p in backbone.model.parameters():
        p.requires_grad = False
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(head.parameters())
    train_loader = DataLoader(splits.train.with_transform(transforms.ToTensor()),
                              batch_size=batch_size, shuffle=True, num_workers=0)
    test_loader = DataLoader(splits.test.with_transform(transforms.ToTensor()),
                             batch_size=batch_size, shuffle=False, num_workers=0)

    start = time.perf_counter()
    for epoch in range(epochs):
        # Left in train mode, as such scripts are: the frozen backbone's BatchNorm layers
        # still update their running statistics on every batch, so they drift away from the
        # pretrained ones. That is part of the naive recipe being measured.
        model.train()
        epoch_start, total = time.perf_counter(), 0.0
        for images, labels in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(labels)
        print(f"  naive epoch {epoch + 1}/{epochs}: loss {total / len(splits.train):.4f}, "
              f"{time.perf_counter() - epoch_start:.1f} s", flush=True)
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in test_loader:
            correct += (model(images).argmax(1) == labels).sum().item()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "test_accuracy": correct / len(splits.test)}


def run_tunewise(model_name: str, data: DataConfig, epochs: int, batch_size: int) -> dict:
    """tunewise.fit() with a cold feature cache in a fresh temporary folder; timed whole."""
    with tempfile.TemporaryDirectory(prefix="tunewise-bench-") as tmp:
        torch.manual_seed(0)
        start = time.perf_counter()
        record = tunewise.fit(model_name, data, "linear_probe", optimizer="adam", epochs=epochs,
                              batch_size=batch_size, patience=None, num_workers=2,
                              cache_dir=str(Path(tmp) / "cache"), out=Path(tmp) / "run")
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "test_accuracy": record.test["accuracy"],
            "val_accuracy": record.val["accuracy"], "best_epoch": record.best_epoch,
            "record_seconds": record.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pkg:efficientnet_lite0")
    parser.add_argument("--data", default="textile")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-train-per-class", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also save the results here")
    args = parser.parse_args()

    data = DataConfig(data=args.data, max_train_per_class=args.max_train_per_class)
    splits = load_data(data)  # the very splits fit() reads from the same DataConfig
    if splits.test is None:
        parser.error(f"{args.data!r} has no test split to compare on")
    print(f"{args.model} on {args.data}: {len(splits.train)} train, {len(splits.val)} val, "
          f"{len(splits.test)} test images, {len(splits.classes)} classes, {args.epochs} epochs, "
          f"{torch.get_num_threads()} torch threads", flush=True)

    # The 1-minute load average after each side: above the core count, other processes
    # competed for the CPUs and the times are inflated (not necessarily equally).
    print("naive loop ...", flush=True)
    naive = run_naive(args.model, splits, args.epochs, args.batch_size)
    naive["load_after"] = os.getloadavg()[0]
    print("tunewise linear_probe ...", flush=True)
    tw = run_tunewise(args.model, data, args.epochs, args.batch_size)
    tw["load_after"] = os.getloadavg()[0]

    ratio = naive["seconds"] / tw["seconds"]
    diff = 100 * (tw["test_accuracy"] - naive["test_accuracy"])
    speed_ok, accuracy_ok = ratio >= SPEED_TARGET, diff >= -ACCURACY_SLACK
    print()
    print(f"{'':24}{'time (s)':>10}{'test acc':>10}")
    print(f"{'naive PyTorch loop':24}{naive['seconds']:>10.1f}{100 * naive['test_accuracy']:>9.2f}%")
    print(f"{'tunewise linear_probe':24}{tw['seconds']:>10.1f}{100 * tw['test_accuracy']:>9.2f}%")
    print(f"speed ratio naive/tunewise: {ratio:.2f}x  (target >= {SPEED_TARGET:g}x: "
          f"{'met' if speed_ok else 'NOT met'})")
    print(f"accuracy tunewise - naive: {diff:+.2f} points  (target >= -{ACCURACY_SLACK:g}: "
          f"{'met' if accuracy_ok else 'NOT met'})")
    print(f"tunewise best epoch {tw['best_epoch']}, val accuracy {100 * tw['val_accuracy']:.2f}%")
    print(f"1-min load average after naive {naive['load_after']:.2f}, after tunewise "
          f"{tw['load_after']:.2f} ({os.cpu_count()} CPUs)")

    if args.json:
        results = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                   "sizes": {name: len(s) for name, s in splits.named().items()},
                   "naive": naive, "tunewise": tw, "speed_ratio": ratio, "accuracy_diff_points": diff,
                   "speed_target_met": speed_ok, "accuracy_target_met": accuracy_ok}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
