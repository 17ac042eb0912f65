"""Every strategy side by side on one backbone and data set, under the same small budget.

One row per strategy: trainable parameters, time per training step, peak memory of the
process, and validation/test accuracy. Each strategy runs in its own subprocess so that peak
memory (max RSS on CPU, max allocated on a GPU) belongs to that strategy alone.

    python bench/strategies.py                      # pkg:efficientnet_lite0 on the textile images
    python bench/strategies.py --epochs 5 --image-size 224 --max-train-per-class 0   # fuller run
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

STRATEGIES = ["linear_probe", "full", "partial", "gradual_unfreeze", "llrd", "lp_ft", "bitfit",
              "norm_only", "lora", "l2sp", "scratch"]


def run_one(args: argparse.Namespace) -> dict:
    import torch

    import tunewise
    from tunewise.data import load_data
    from tunewise.strategies import get_strategy

    data = tunewise.DataConfig(data=args.data, image_size=args.image_size or None,
                               max_train_per_class=args.max_train_per_class or None)
    knobs = {"probe_epochs": 3} if args.one == "lp_ft" else {}
    with tempfile.TemporaryDirectory() as out:
        record = tunewise.fit(args.model, data, get_strategy(args.one, **knobs), epochs=args.epochs,
                              batch_size=args.batch_size, patience=None, out=Path(out) / "run",
                              cache_dir=str(Path(out) / "cache"))
        epochs = [json.loads(line) for line in (Path(out) / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = -(-len(load_data(data).train) // args.batch_size)  # per epoch
    if torch.cuda.is_available():
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"strategy": args.one, "trainable": record.trainable_params, "total": record.total_params,
            "step_ms": 1000 * sum(e["seconds"] for e in epochs) / (steps * len(epochs)),
            "peak_mb": peak_mb, "val_acc": record.val["accuracy"],
            "test_acc": (record.test or {}).get("accuracy"), "seconds": record.seconds,
            "cached": record.cached_features}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pkg:efficientnet_lite0")
    parser.add_argument("--data", default="textile")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=128, help="0: the backbone's own size")
    parser.add_argument("--max-train-per-class", type=int, default=150, help="0: all images")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args)))
        return

    rows = []
    shared = ["--model", args.model, "--data", args.data, "--epochs", str(args.epochs), "--batch-size",
              str(args.batch_size), "--image-size", str(args.image_size), "--max-train-per-class",
              str(args.max_train_per_class)]
    for name in args.strategies.split(","):
        done = subprocess.run([sys.executable, __file__, *shared, "--one", name],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"done: {name}", file=sys.stderr)
    print(f"\n{args.model} on {args.data}: {args.epochs} epochs, batch {args.batch_size}, "
          f"image size {args.image_size or 'native'}, {args.max_train_per_class or 'all'} training images per class")
    print(f"{'strategy':<17}{'trainable':>12}{'step ms':>9}{'peak MB':>9}{'val acc':>9}{'test acc':>9}{'total s':>9}")
    for r in rows:
        test = "-" if r["test_acc"] is None else f"{100 * r['test_acc']:.1f}"
        print(f"{r['strategy'] + (' *' if r['cached'] else ''):<17}{r['trainable']:>12,}{r['step_ms']:>9.1f}"
              f"{r['peak_mb']:>9.0f}{100 * r['val_acc']:>9.1f}{test:>9}{r['seconds']:>9.1f}")
    print("* features computed once and cached: the step time is the head's alone")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
