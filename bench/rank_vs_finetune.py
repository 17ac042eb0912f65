"""Benchmark: `tunewise.rank` (one feature pass per candidate) against fine-tuning every candidate.

What it measures, in one process, per data set, for the same six candidates (three pretrained
EfficientNet-Lites, torchvision's MobileNetV2, and two random-weight models that are deliberately weak):

(1) the ranking's cost: each candidate's feature extraction (backbone loaded, one forward pass
    over the training split, into a FRESH feature cache: HOME points at an empty temporary
    folder before tunewise is imported, so nothing is read from an earlier run) plus its
    scoring time (every scorer);
(2) the fine-tuning cost: `rank(..., verify=len(candidates), verify_strategy=--strategy)` fine-tunes
    every candidate (strategy lp_ft unless --strategy says otherwise, --epochs epochs, batch 32,
    no early stop, seed 0) and records each one's validation accuracy and time;
(3) how well the cheap ranking predicts the fine-tuned order: Kendall's tau and weighted tau of
    the combined score against the fine-tuned accuracy, and each scorer's own Kendall's tau;
(4) the ratio ranking time / total fine-tuning time (target: at most 5%).

It prints one table per data set (candidate, combined score, every scorer, fine-tuned val
accuracy, feature seconds, fine-tune seconds), then the ratio and the taus, and the 1-minute
load average (above the CPU count, other processes competed for the CPUs).

Run (textile 128 px, 100 training images per class, 3 epochs; tens of minutes on 2 CPU cores):

    python bench/rank_vs_finetune.py
    python bench/rank_vs_finetune.py --per-class 20 --epochs 1                 # quick look
    python bench/rank_vs_finetune.py --datasets textile,fashion_mnist --out runs/rank-bench
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

# A fresh, empty home before tunewise is imported: the feature cache (~/.cache/tunewise) and any
# unpacked data land there, so every candidate's features are extracted from scratch.
_HOME = tempfile.TemporaryDirectory(prefix="tunewise-rank-bench-home-")
os.environ["HOME"] = _HOME.name

import torch  # noqa: E402

from tunewise import DataConfig, TrainConfig, rank  # noqa: E402
from tunewise.data import load_data  # noqa: E402
from tunewise.ranking import SCORERS  # noqa: E402

CANDIDATES = [
    "pkg:efficientnet_lite0",
    "pkg:efficientnet_lite1",
    "pkg:efficientnet_lite2",
    "pkg:mobilenet_v2",
    "random:pkg:efficientnet_lite0",
    "random:timm:resnet18",
]
IMAGE_SIZE = {"textile": 128, "fashion_mnist": 64}
RATIO_TARGET = 0.05  # ranking time / total fine-tuning time


def data_config(name: str, per_class: int) -> DataConfig:
    return DataConfig(data=name, image_size=IMAGE_SIZE.get(name), max_train_per_class=per_class)


def run_dataset(name: str, per_class: int, epochs: int, batch_size: int, strategy: str, out: Path) -> dict:
    """rank() with every candidate verified; the figures of one data set."""
    data = data_config(name, per_class)
    train = TrainConfig(epochs=epochs, batch_size=batch_size, num_workers=0, patience=None, seed=0)
    started = time.perf_counter()
    ranking = rank(CANDIDATES, data, task="image_classification", verify=len(CANDIDATES),
                   verify_strategy=strategy, train=train, out=out)
    wall = time.perf_counter() - started
    ok = [c for c in ranking.candidates if c.error is None]
    feature_s = sum(c.feature_seconds for c in ok)
    score_s = sum(c.score_seconds for c in ok)
    finetune_s = sum(c.finetune_seconds or 0.0 for c in ok)
    return {
        "data": name, "image_size": data.image_size, "per_class": per_class, "epochs": epochs, "strategy": strategy,
        "examples": ranking.examples, "metric": ranking.metric,
        "candidates": [{"model": c.model, "combined": c.combined, "scores": c.scores,
                        "finetuned": c.finetuned, "feature_seconds": c.feature_seconds,
                        "score_seconds": c.score_seconds, "finetune_seconds": c.finetune_seconds,
                        "error": c.error} for c in ranking.candidates],
        "feature_seconds": feature_s, "score_seconds": score_s, "ranking_seconds": feature_s + score_s,
        "finetune_seconds": finetune_s, "ratio": (feature_s + score_s) / finetune_s if finetune_s else math.nan,
        "rank_wall_seconds": wall, "rank_overhead_seconds": wall - finetune_s - feature_s - score_s,
        "kendall_tau": ranking.kendall_tau, "weighted_tau": ranking.weighted_tau,
        "scorer_taus": ranking.scorer_taus, "load_after": os.getloadavg()[0],
    }


def _num(value, fmt: str, width: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return f"{'-':>{width}}"
    return f"{value:>{width}{fmt}}"


def print_result(r: dict) -> None:
    scorers = list(SCORERS)
    print(f"\n{r['data']} ({r['image_size']} px, {r['sizes']['train']} train / {r['sizes']['val']} val images, "
          f"{r['examples']} examples scored, {r['strategy']} fine-tune {r['epochs']} epochs, "
          "val evaluated every epoch)")
    header = f"{'candidate':32}{'combined':>9}" + "".join(f"{s:>10}" for s in scorers)
    print(header + f"{'ft val%':>9}{'feat s':>8}{'score s':>8}{'ft s':>8}")
    for c in r["candidates"]:
        if c["error"]:
            print(f"{c['model']:32}  failed: {c['error']}")
            continue
        row = f"{c['model']:32}{_num(c['combined'], '.3f', 9)}"
        row += "".join(_num(c["scores"].get(s), ".3g", 10) for s in scorers)
        finetuned = None if c["finetuned"] is None else 100 * c["finetuned"]
        row += (f"{_num(finetuned, '.1f', 9)}{_num(c['feature_seconds'], '.1f', 8)}"
                f"{_num(c['score_seconds'], '.2f', 8)}{_num(c['finetune_seconds'], '.1f', 8)}")
        print(row)
    met = "met" if r["ratio"] <= RATIO_TARGET else "NOT met"
    print(f"ranking time {r['ranking_seconds']:.1f} s (features {r['feature_seconds']:.1f} s + scoring "
          f"{r['score_seconds']:.2f} s); fine-tuning all {r['finetune_seconds']:.1f} s")
    print(f"ratio ranking / fine-tuning: {100 * r['ratio']:.2f}%  (target <= {100 * RATIO_TARGET:g}%: {met})")
    print(f"rank() wall {r['rank_wall_seconds']:.1f} s, of which outside features, scoring and fine-tunes "
          f"(data loading, reports) {r['rank_overhead_seconds']:.1f} s")
    print(f"Kendall's tau {_num(r['kendall_tau'], '.3f', 0)}, weighted tau {_num(r['weighted_tau'], '.3f', 0)}"
          f" (combined score vs fine-tuned val {r['metric']})")
    print("per-scorer tau: " + ", ".join(f"{s} {_num(t, '.3f', 0)}" for s, t in r["scorer_taus"].items()))
    print(f"1-min load average after: {r['load_after']:.2f} ({os.cpu_count()} CPUs)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=100, help="training images per class")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each fine-tune")
    parser.add_argument("--strategy", default="lp_ft", help="the fine-tuning strategy verified against "
                        "(rank's default, lp_ft; full was the first version's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--datasets", default="textile", help="comma-separated: textile, fashion_mnist")
    parser.add_argument("--out", type=Path, default=None,
                        help="keep each data set's ranking folder and results.json here (default: a temporary folder)")
    args = parser.parse_args()

    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    print(f"candidates: {', '.join(CANDIDATES)}; {torch.get_num_threads()} torch threads, "
          f"{'GPU' if torch.cuda.is_available() else 'CPU only'}, fresh HOME {_HOME.name}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="tunewise-rank-bench-") as tmp:
        root = args.out if args.out is not None else Path(tmp)
        for name in names:
            print(f"ranking and fine-tuning on {name} ...", flush=True)
            try:  # a data set that cannot be loaded (fashion_mnist not installed) is skipped, with a note
                splits = load_data(data_config(name, args.per_class))
            except Exception as err:  # noqa: BLE001
                print(f"skipped {name}: cannot load it ({type(err).__name__}: {err})", flush=True)
                continue
            result = run_dataset(name, args.per_class, args.epochs, args.batch_size, args.strategy, root / name)
            result["sizes"] = {"train": len(splits.train), "val": len(splits.val)}
            print_result(result)
            results.append(result)
            if args.out is not None:  # after each data set, so a long run keeps what it finished
                (args.out / "results.json").write_text(json.dumps({"args": {**vars(args), "out": str(args.out)},
                                                                    "results": results}, indent=2, default=str) + "\n")
    _HOME.cleanup()


if __name__ == "__main__":
    main()
