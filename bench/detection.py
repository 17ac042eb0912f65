"""Benchmark: object detection and semantic segmentation, frozen vs partial vs full fine-tuning vs scratch.

What it measures, in one process, per task (object_detection on detection_demo, semantic_segmentation
on segmentation_demo: tinted Fashion-MNIST items pasted on 128 px canvases, 400/100/100
train/val/test; the two sets share their canvases), on pkg:efficientnet_lite0 (ImageNet weights,
offline) at image_size 128:

(1) four strategies, each one `tunewise.fit(...)` with its default learning rate (fit picks it when
    lr is None), the same --epochs, batch 16, no early stop, seed 0, no data-loading workers,
    the first --train-images training canvases, and test=True:
      linear_probe  frozen backbone; the neck and heads train (Faster R-CNN's FPN, RPN and box
                    heads; the semantic-FPN decoder). Nothing is cached: these tasks run the
                    frozen backbone on every batch;
      partial       the backbone's last 2 layer groups and the heads;
      full          everything, from the pretrained weights;
      scratch       everything, same architecture from random weights (the baseline pretraining
                    must beat);
(2) for each: trainable parameters, epochs run, fit()'s wall seconds (data, model build, every
    epoch, the final val and test evaluations, export), seconds per epoch (the mean of the
    epochs' own times in metrics.jsonl: one training pass plus one validation pass), the
    validation metric of the kept (best) epoch and its test metric (map, COCO mAP@[.5:.95], for
    detection; miou, mean IoU, for segmentation) and a second test metric (map_50; pixel_accuracy);
(3) ratios: each pretrained strategy's test metric over scratch's, and its seconds over full's.

It prints one table per task, and the 1-minute load average before the first run and after each
run (above the CPU count, other processes competed for the CPUs and the times are inflated).

Run (defaults: 6 epochs, all 400 training canvases; tens of minutes on 2 CPU cores, not yet timed):

    python bench/detection.py
    python bench/detection.py --quick --tasks semantic_segmentation    # smoke run: 1 epoch, 32 canvases
    python bench/detection.py --tasks object_detection --out runs/detection-bench   # keep runs and results.json

Needs Fashion-MNIST (Debian's dataset-fashion-mnist package, /usr/share/datasets/fashion-mnist).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch

from tunewise import DataConfig, TrainConfig, fit
from tunewise.data import load_data
from tunewise.strategies import get_strategy

MODEL = "pkg:efficientnet_lite0"
IMAGE_SIZE = 128
BATCH_SIZE = 16
PARTIAL_GROUPS = 2
STRATEGIES = ["linear_probe", "partial", "full", "scratch"]
TASKS = {  # task -> (data set, main metric, second metric)
    "object_detection": ("detection_demo", "map", "map_50"),
    "semantic_segmentation": ("segmentation_demo", "miou", "pixel_accuracy"),
}


def run_strategy(task: str, name: str, epochs: int, train_images: int, out: Path) -> dict:
    """One fit(); the figures of one table row."""
    data_name, metric, second = TASKS[task]
    strategy = get_strategy(name, k=PARTIAL_GROUPS) if name == "partial" else get_strategy(name)
    data = DataConfig(data=data_name, image_size=IMAGE_SIZE, max_train_per_class=train_images)
    train = TrainConfig(epochs=epochs, batch_size=BATCH_SIZE, num_workers=0, patience=None, seed=0)
    started = time.perf_counter()
    record = fit(MODEL, data, strategy, task=task, train=train, out=out, test=True)
    wall = time.perf_counter() - started
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    test = record.test or {}
    return {
        "strategy": name, "lr": strategy.default_lr, "knobs": strategy.knobs(),
        "trainable_params": record.trainable_params, "total_params": record.total_params,
        "epochs_run": record.epochs_run, "best_epoch": record.best_epoch,
        "seconds": record.seconds, "wall_seconds": wall,
        "seconds_per_epoch": sum(e["seconds"] for e in lines) / len(lines) if lines else None,
        "epoch_seconds": [e["seconds"] for e in lines], "train_loss": [e["train_loss"] for e in lines],
        "val": record.val.get(metric), "test": test.get(metric), "test_second": test.get(second),
        "val_metrics": _plain(record.val), "test_metrics": _plain(test), "curve": record.curve,
        "run_dir": record.run_dir, "load_after": os.getloadavg()[0], "error": None,
    }


def _plain(metrics: dict) -> dict:
    """A metrics dict without its per-class lists (segmentation's iou), for results.json."""
    return {k: v for k, v in metrics.items() if not isinstance(v, list)}


def add_ratios(rows: list[dict]) -> None:
    """Each row's test metric over scratch's, and its seconds over full's (None where either is missing or
    scratch scored 0)."""
    by_name = {r["strategy"]: r for r in rows if r["error"] is None}
    scratch, full = by_name.get("scratch"), by_name.get("full")
    for r in rows:
        if r["error"] is not None:
            continue
        base = scratch["test"] if scratch and r["strategy"] != "scratch" else None
        r["test_vs_scratch"] = r["test"] / base if base and r["test"] is not None else None
        r["time_vs_full"] = r["seconds"] / full["seconds"] if full and full["seconds"] else None


def _num(value, fmt: str, width: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return f"{'-':>{width}}"
    return f"{value:>{width}{fmt}}"


def print_table(result: dict) -> None:
    task, metric, second = result["task"], result["metric"], result["second_metric"]
    print(f"\n{task} on {result['data']} ({MODEL}, {IMAGE_SIZE} px, {result['train_images']} train / "
          f"{result['sizes']['val']} val / {result['sizes']['test']} test images, {result['epochs']} epochs, "
          f"batch {BATCH_SIZE}, each strategy at its default rate)")
    print(f"{'strategy':<14}{'lr':>8}{'trainable':>13}{'epochs':>7}{'seconds':>9}{'s/epoch':>9}"
          f"{'val ' + metric:>10}{'test ' + metric:>11}{'test ' + second:>20}{'x scratch':>10}{'x full':>8}"
          f"{'load':>6}")
    for r in result["rows"]:
        if r["error"] is not None:
            print(f"{r['strategy']:<14}  failed: {r['error']}")
            continue
        print(f"{r['strategy']:<14}{r['lr']:>8.0e}{r['trainable_params']:>13,}{r['epochs_run']:>7}"
              f"{_num(r['seconds'], '.1f', 9)}{_num(r['seconds_per_epoch'], '.1f', 9)}"
              f"{_num(r['val'], '.4f', 10)}{_num(r['test'], '.4f', 11)}{_num(r['test_second'], '.4f', 20)}"
              f"{_num(r['test_vs_scratch'], '.2f', 10)}{_num(r['time_vs_full'], '.2f', 8)}"
              f"{_num(r['load_after'], '.2f', 6)}")
    print(f"x scratch: test {metric} / scratch's test {metric} ('-' where scratch scored 0); "
          "x full: seconds / full's seconds; "
          f"load: 1-min load average after the run ({os.cpu_count()} CPUs); "
          f"total params {result['rows'][0].get('total_params', 0):,}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated: " + ", ".join(TASKS))
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated, of "
                        + ", ".join(STRATEGIES) + " (the ratios need scratch and full)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of every run")
    parser.add_argument("--train-images", type=int, default=400, help="training canvases (of 400)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 epoch, 32 training canvases")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--out", type=Path, default=None, help="keep the run folders and results.json "
                        "(written after each task) here; a new folder (default: a temporary one)")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.train_images = 1, 32
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [t for t in tasks if t not in TASKS] + [s for s in names if s not in STRATEGIES]
    if unknown:
        parser.error(f"unknown task or strategy: {', '.join(unknown)}")
    if args.out is not None and any((args.out / t).exists() for t in tasks):
        parser.error(f"{args.out} already holds runs of these tasks: pass a new --out")
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"{MODEL} at {IMAGE_SIZE} px; tasks {', '.join(tasks)}; strategies {', '.join(names)}; "
          f"{args.epochs} epochs, {args.train_images} training canvases; {torch.get_num_threads()} torch threads, "
          f"{'GPU' if torch.cuda.is_available() else 'CPU only'}; 1-min load average before "
          f"{os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="tunewise-detection-bench-") as tmp:
        root = args.out if args.out is not None else Path(tmp)
        for task in tasks:
            data_name, metric, second = TASKS[task]
            splits = load_data(DataConfig(data=data_name, image_size=IMAGE_SIZE,
                                          max_train_per_class=args.train_images), task)  # the table's sizes
            rows = []
            for name in names:
                print(f"{task}: {name} ...", flush=True)
                try:
                    rows.append(run_strategy(task, name, args.epochs, args.train_images, root / task / name))
                except Exception as err:  # noqa: BLE001 - one failed run must not lose the others
                    print(f"{task}: {name} failed: {type(err).__name__}: {err}", flush=True)
                    rows.append({"strategy": name, "error": f"{type(err).__name__}: {err}",
                                 "load_after": os.getloadavg()[0]})
            add_ratios(rows)
            result = {"task": task, "data": data_name, "metric": metric, "second_metric": second,
                      "epochs": args.epochs, "train_images": len(splits.train),
                      "sizes": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
                      "rows": rows}
            print_table(result)
            results.append(result)
            if args.out is not None:  # after each task, so a long run keeps what it finished
                (args.out / "results.json").write_text(json.dumps(
                    {"args": {**vars(args), "out": str(args.out)}, "model": MODEL, "image_size": IMAGE_SIZE,
                     "batch_size": BATCH_SIZE, "results": results}, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
