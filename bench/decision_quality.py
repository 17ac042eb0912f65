"""How good are `tunewise search`'s decisions? Measured against an exhaustive grid.

On each data set, at one small epoch count (3):

- GRID: every strategy the search compares by default (tunewise.strategies.default_strategies()) x 3 rates (exactly
  `rates(strategy, 3, task)`, so the search's rates are grid cells) x seeds 0, 1, 2, each a
  `tunewise.fit(..., patience=None, test=True)`; plus scratch at `rates("scratch", 3)` with twice the
  epochs (what the search gives scratch), 3 seeds. No --metric: every run selects on the task's
  choice (`record.metric`; macro-F1 when the classes are imbalanced), as the search does. Each run
  has its own folder; a run whose record.json exists is read back, not rerun (resumable). After a
  run its per-example test statistics are saved (`test_examples.npy`) and its weights deleted.
- SEARCH: `tunewise.search(model, data, SearchConfig(epochs=3))`: its default budget, seeds and
  finalists; the same TrainConfig as the grid.

Per data set: the search's winner and its test metric (mean over seeds, from the grid cell at the
same strategy and rate; a winner the grid does not hold, such as a "(no augmentation)" variant, is
scored from the search's own seeded runs), the grid's pick (best mean validation) and the oracle
(best mean test), the regret (oracle minus the search's winner, test points) with a 95% interval
(tunewise.stats.difference_interval over per-example test statistics: examples paired, seeds
resampled; a t-interval over the paired per-seed differences is given too), pretrained vs scratch
from each (the search's `versus_scratch`; the grid's best pretrained cell vs its best scratch cell
by validation, their test difference with a t-interval over seeds), and the cost of each in
epoch-equivalents. Targets: regret <= 0.5 points, the same verdict, the search <= 1/3 of the grid's cost.

    python bench/decision_quality.py                                   # all four sets, /tmp/tunewise-decision
    python bench/decision_quality.py --sets textile --out /tmp/decision
    python bench/decision_quality.py --sets rotten,ner --threads 1

Sets: textile (pkg:efficientnet_lite0), fashion (a Fashion-MNIST subset written once as an image
folder, pkg:efficientnet_lite0), rotten (pkg:minilm, Rotten Tomatoes), ner (pkg:minilm, NER demo).
The figures go to OUT/decision_quality.json (merged per set, written atomically).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from tunewise import DataConfig, Leaderboard, RunRecord, TrainConfig, fit
from tunewise.data import load_data
from tunewise.errors import ConfigError, one_line
from tunewise.export import load_model
from tunewise.inference import _run
from tunewise.io import write_json
from tunewise.stats import difference_interval, verdict
from tunewise.study import SearchConfig, search
from tunewise.study.tiers import rates
from tunewise.tasks import get_task

EPOCHS = 3
SEEDS = (0, 1, 2)
RATES = 3
SCRATCH_EPOCHS = SearchConfig(epochs=EPOCHS).scratch_epochs or 2 * EPOCHS
"""What the search gives its scratch baseline (SearchConfig.scratch_epochs' default: twice the epochs)."""
BATCH_SIZE = 32
REGRET_TARGET = 0.5  # points
COST_TARGET = 1 / 3
FASHION_CLASSES = ["t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle_boot"]
FASHION_PER_CLASS = 100
"""Images written per class: 70% train (of which `max_train_per_class` are kept), 15% val, 15% test."""
FASHION_IDX = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class Spec:
    model: str
    task: str
    data: dict
    """DataConfig fields; `data` itself is filled in at run time for the Fashion-MNIST folder."""
    label: str
    notes: list[str] = field(default_factory=list)


SETS: dict[str, Spec] = {
    "textile": Spec("pkg:efficientnet_lite0", "image_classification",
                    {"data": "textile", "image_size": 48, "max_train_per_class": 20},
                    "textile, 48 px, 20 train/class"),
    "fashion": Spec("pkg:efficientnet_lite0", "image_classification",
                    {"image_size": 48, "max_train_per_class": 20},
                    f"Fashion-MNIST subset ({FASHION_PER_CLASS}/class written), 48 px, 20 train/class"),
    "rotten": Spec("pkg:minilm", "text_classification",
                   {"data": "rotten_tomatoes", "max_train_per_class": 32, "max_length": 32, "val_fraction": 0.02,
                    "test_fraction": 0.03},
                   "Rotten Tomatoes, 32 train/class, 32 tokens, val 2% / test 3% of 12.7k"),
    "ner": Spec("pkg:minilm", "token_classification",
                {"data": "ner_demo", "max_train_per_class": 64, "max_length": 32},
                "NER demo, 64 train sentences, 32 tokens"),
}


def say(text: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {text}", flush=True)


def load() -> float:
    return round(os.getloadavg()[0], 2)


# --- data --------------------------------------------------------------------------------------

def _idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_folder(out: Path) -> Path:
    """The first FASHION_PER_CLASS training images of each class as PNGs in class folders, written once."""
    from PIL import Image

    folder = out / f"fashion-mnist-{FASHION_PER_CLASS}pc"
    if (folder / ".complete").is_file():
        return folder
    images, labels = _idx(FASHION_IDX / "train-images-idx3-ubyte.gz"), _idx(FASHION_IDX / "train-labels-idx1-ubyte.gz")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for index, name in enumerate(FASHION_CLASSES):
        (tmp / name).mkdir(parents=True)
        for k, row in enumerate(np.flatnonzero(labels == index)[:FASHION_PER_CLASS]):
            Image.fromarray(images[row]).save(tmp / name / f"{k:04d}.png")
    (tmp / ".complete").write_text("")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def data_config(name: str, spec: Spec, out: Path) -> DataConfig:
    fields_ = dict(spec.data)
    if name == "fashion":
        fields_["data"] = str(fashion_folder(out))
    return DataConfig(**fields_)


def set_folder(name: str, spec: Spec) -> str:
    """The set's folder name carries its sizes, so a resized set never reuses another size's runs."""
    d = spec.data
    parts = [name, f"e{EPOCHS}"]
    if d.get("image_size"):
        parts.append(f"{d['image_size']}px")
    if d.get("max_train_per_class"):
        parts.append(f"{d['max_train_per_class']}pc")
    if d.get("max_length"):
        parts.append(f"{d['max_length']}tok")
    if "val_fraction" in d or "test_fraction" in d:
        parts.append(f"val{d.get('val_fraction', 0.15):g}-test{d.get('test_fraction', 0.15):g}")
    return "-".join(parts)


# --- per-example test statistics ---------------------------------------------------------------

TEST_STATS = "test_examples.npy"


def test_stats(run_dir: Path, splits, task_name: str) -> np.ndarray:
    """Per test example statistics (the task's example_stats) of the model exported in run_dir."""
    path = run_dir / TEST_STATS
    if path.is_file():
        return np.load(path)
    model, info = load_model(run_dir)
    task = get_task(task_name)
    task.classes = info["classes"]
    loader = task.loader(splits.test, info["preprocess"], TrainConfig(batch_size=64, num_workers=0), training=False)
    outputs, targets = _run(model, loader, task)
    stats = task.example_stats(outputs, targets, loader.dataset)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, stats)
    os.replace(tmp, path)
    return stats


def drop_weights(run_dir: Path) -> None:
    for pattern in ("*.pt", "*.safetensors", "*.bin", "probe/*.pt", "probe/*.safetensors"):
        for file in run_dir.glob(pattern):
            file.unlink(missing_ok=True)


# --- the grid ----------------------------------------------------------------------------------

def grid_runs(spec: Spec, strategies: list[str]) -> list[tuple[str, float, int, int]]:
    """(strategy, lr, seed, epochs) of every grid run, seed by seed."""
    cells = [(s, lr, EPOCHS) for s in strategies for lr in sorted(rates(s, RATES, spec.task))]
    cells += [("scratch", lr, SCRATCH_EPOCHS)
              for lr in sorted(rates("scratch", RATES, spec.task))]
    return [(s, lr, seed, epochs) for seed in SEEDS for s, lr, epochs in cells]


def run_grid(spec: Spec, data: DataConfig, train: TrainConfig, folder: Path, splits) -> list[dict]:
    runs = grid_runs(spec, list(SearchConfig().strategies))
    rows, started, fresh = [], time.perf_counter(), 0
    for number, (strategy, lr, seed, epochs) in enumerate(runs, 1):
        out = folder / f"{strategy}-lr{lr:.3g}-seed{seed}"
        if (out / "record.json").is_file() and (out / TEST_STATS).is_file():
            record = RunRecord.load(out / "record.json")
        else:
            shutil.rmtree(out, ignore_errors=True)  # a run killed part-way starts again
            config = TrainConfig(**{**vars(train), "lr": lr, "seed": seed, "epochs": epochs})
            try:
                record = fit(spec.model, data, strategy, task=spec.task, train=config, out=out, test=True)
            except ConfigError as err:  # refused on this backbone (vera on a CNN): no cell, as the search has none
                say(f"grid {number}/{len(runs)} {strategy} lr {lr:.3g} seed {seed}: refused: {one_line(err)}")
                continue
            test_stats(out, splits, spec.task)
            drop_weights(out)
            fresh += 1
            spent = time.perf_counter() - started
            left = spent / fresh * (len(runs) - number)
            say(f"grid {number}/{len(runs)} {strategy} lr {lr:.3g} seed {seed}: val {record.val_score:.4f} "
                f"test {record.test[record.metric]:.4f} ({record.metric}) in {record.seconds:.0f} s; "
                f"about {left / 60:.0f} min left; load {load()}")
        rows.append({"strategy": strategy, "lr": lr, "seed": seed, "epochs": epochs, "metric": record.metric,
                     "val": record.val_score, "test": float(record.test[record.metric]), "compute": record.compute,
                     "seconds": record.seconds, "run_dir": str(out)})
    return rows


def cells(rows: list[dict]) -> list[dict]:
    by_cell: dict[tuple, list[dict]] = {}
    for row in rows:
        by_cell.setdefault((row["strategy"], row["lr"]), []).append(row)
    found = []
    for (strategy, lr), runs in by_cell.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        found.append({"strategy": strategy, "lr": lr, "seeds": [r["seed"] for r in runs],
                      "val": [r["val"] for r in runs], "test": [r["test"] for r in runs],
                      "val_mean": float(np.mean([r["val"] for r in runs])),
                      "test_mean": float(np.mean([r["test"] for r in runs])),
                      "run_dirs": [r["run_dir"] for r in runs]})
    return found


def find_cell(found: list[dict], strategy: str, lr: float) -> dict | None:
    return next((c for c in found if c["strategy"] == strategy and math.isclose(c["lr"], lr, rel_tol=1e-3)), None)


# --- intervals ---------------------------------------------------------------------------------

def t_interval(diffs: list[float]) -> tuple[float, float, float]:
    from scipy import stats

    mean = float(np.mean(diffs))
    if len(diffs) < 2 or np.std(diffs) == 0:
        return mean, mean, mean
    half = float(stats.t.ppf(0.975, len(diffs) - 1) * np.std(diffs, ddof=1) / math.sqrt(len(diffs)))
    return mean, mean - half, mean + half


def word(significant: bool, mean: float) -> str:
    if not significant:
        return "cannot tell"
    return "pretrained better" if mean > 0 else "scratch better"


# --- one data set ------------------------------------------------------------------------------

def measure(name: str, spec: Spec, out: Path) -> dict:
    load_start = load()
    data = data_config(name, spec, out)
    folder = out / set_folder(name, spec)
    train = TrainConfig(batch_size=BATCH_SIZE, num_workers=0, epochs=EPOCHS, patience=None)
    say(f"{name}: {spec.model} on {spec.label}; {folder}; load {load()}")
    splits = load_data(data, spec.task)
    sizes = {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)}
    say(f"{name}: examples {sizes}")
    task = get_task(spec.task)
    task.classes = splits.classes

    started = time.perf_counter()
    board_path = folder / "search" / "leaderboard.json"
    if board_path.is_file():
        board = Leaderboard.load(board_path)
    else:
        resume = (folder / "search" / "settings.json").is_file()
        board = search(spec.model, data, SearchConfig(epochs=EPOCHS), train=train, task=spec.task,
                       out=folder / "search", resume=resume)
    say(f"{name}: search done in {time.perf_counter() - started:.0f} s: winner {board.winner}, "
        f"compute {board.compute}; load {load()}")

    started = time.perf_counter()
    rows = run_grid(spec, data, train, folder / "grid", splits)
    say(f"{name}: grid done in {time.perf_counter() - started:.0f} s (this process); load {load()}")
    found = cells(rows)
    metric = rows[0]["metric"]
    stats_of = {}

    def cell_stats(cell: dict) -> list[np.ndarray]:
        return [stats_of.setdefault(d, test_stats(Path(d), splits, spec.task)) for d in cell["run_dirs"]]

    def score(stats: np.ndarray) -> float:
        return float(task.metric_from_stats(stats, metric))

    # the stats reproduce each record's test metric (a check on the per-example route)
    mismatch = max(abs(score(s) - t) for c in found for s, t in zip(cell_stats(c), c["test"], strict=True))

    winner = next(a for a in board.arms if a.name == board.winner)
    in_grid = find_cell(found, winner.strategy, winner.lr) if winner.augment and not winner.knobs else None
    if in_grid is not None:
        won = {**in_grid, "source": "grid cell"}
    else:  # a variant the grid does not hold: the search's own seeded runs, scored on test here
        won_stats = [test_stats(Path(d), splits, spec.task) for d in winner.run_dirs]
        won = {"strategy": winner.strategy, "lr": winner.lr, "seeds": winner.seeds, "val": winner.scores,
               "test": [score(s) for s in won_stats], "val_mean": winner.mean,
               "test_mean": float(np.mean([score(s) for s in won_stats])), "run_dirs": winner.run_dirs,
               "source": f"the search's own runs ({winner.name}: not a grid cell)"}
        for d, s in zip(winner.run_dirs, won_stats, strict=True):
            stats_of[d] = s
    pick = max(found, key=lambda c: c["val_mean"])
    oracle = max(found, key=lambda c: c["test_mean"])
    regret = 100 * (oracle["test_mean"] - won["test_mean"])
    if in_grid is not None and oracle is in_grid:
        boot = (0.0, 0.0, 0.0)
    else:
        boot = difference_interval(cell_stats(oracle), cell_stats(won), lambda s: score(s))
    paired = t_interval([o - w for o, w in zip(oracle["test"], won["test"], strict=False)])

    pretrained = [c for c in found if c["strategy"] != "scratch"]
    scratch_cells = [c for c in found if c["strategy"] == "scratch"]
    best_pre = max(pretrained, key=lambda c: c["val_mean"])
    best_scr = max(scratch_cells, key=lambda c: c["val_mean"])
    g_mean, g_low, g_high = t_interval([p - s for p, s in zip(best_pre["test"], best_scr["test"], strict=True)])
    g_sig, g_words = verdict(g_mean, g_low, g_high, len(SEEDS))
    g_boot = difference_interval(cell_stats(best_pre), cell_stats(best_scr), lambda s: score(s))
    g_boot_sig, _ = verdict(*g_boot, len(SEEDS))
    vs = board.versus_scratch
    if vs is not None:
        s_verdict, s_mean = word(vs["significant"], vs["mean"]), vs["mean"]
    else:  # the winner is scratch itself (it beat the pretrained arms significantly) or no scratch ran
        s_verdict, s_mean = ("scratch better" if winner.strategy == "scratch" else "no scratch arm"), None
    grid_verdict = word(g_sig, g_mean)

    grid_cost = float(sum(r["compute"] for r in rows))
    ratio = board.compute / grid_cost
    result = {
        "set": name, "model": spec.model, "task": spec.task, "data": {k: v for k, v in vars(data).items()
                                                                      if v != getattr(DataConfig(), k)},
        "label": spec.label, "examples": sizes, "epochs": EPOCHS, "scratch_epochs": SCRATCH_EPOCHS,
        "seeds": list(SEEDS), "metric": metric, "grid_runs": len(rows),
        "search": {"winner": board.winner, "strategy": winner.strategy, "lr": winner.lr, "val_mean": winner.mean,
                   "test_mean": won["test_mean"], "test_per_seed": won["test"], "test_source": won["source"],
                   "arm_test_seed0": (winner.test or {}).get(metric), "pick": board.pick,
                   "compute": board.compute, "seconds": board.seconds, "budget": board.budget},
        "grid_pick": {k: pick[k] for k in ("strategy", "lr", "val_mean", "test_mean", "test")},
        "oracle": {k: oracle[k] for k in ("strategy", "lr", "val_mean", "test_mean", "test")},
        "regret_points": regret,
        "regret_interval": {"method": "tunewise.stats.difference_interval over per-example test statistics "
                                      "(examples paired, seeds resampled), 95%",
                            "low": 100 * boot[1], "high": 100 * boot[2]},
        "regret_t_interval": {"method": "t-interval over the paired per-seed test differences, 95%",
                              "low": 100 * paired[1], "high": 100 * paired[2]},
        "grid_pick_regret_points": 100 * (oracle["test_mean"] - pick["test_mean"]),
        "versus_scratch": {
            "search": {"verdict": s_verdict, "mean_points": None if s_mean is None else 100 * s_mean,
                       "low": None if vs is None else 100 * vs["ci_low"],
                       "high": None if vs is None else 100 * vs["ci_high"],
                       "words": None if vs is None else vs["verdict"], "split": "validation"},
            "grid": {"verdict": grid_verdict, "pretrained": [best_pre["strategy"], best_pre["lr"]],
                     "scratch": [best_scr["strategy"], best_scr["lr"]], "mean_points": 100 * g_mean,
                     "low": 100 * g_low, "high": 100 * g_high, "words": g_words, "split": "test",
                     "method": "t-interval over seeds (seed k minus seed k), 95%",
                     "bootstrap_low": 100 * g_boot[1], "bootstrap_high": 100 * g_boot[2],
                     "bootstrap_verdict": word(g_boot_sig, g_boot[0])},
        },
        "cost": {"grid": grid_cost, "search": board.compute, "ratio": ratio,
                 "grid_seconds": float(sum(r["seconds"] for r in rows)), "search_seconds": board.seconds},
        "stats_check_max_abs_diff": mismatch,
        "pass": {"regret": regret <= REGRET_TARGET, "verdict": s_verdict == grid_verdict, "cost": ratio <= COST_TARGET},
        "cells": [{k: c[k] for k in ("strategy", "lr", "val_mean", "test_mean", "val", "test")} for c in found],
        "load_start": load_start, "load_end": load(), "finished": datetime.now().isoformat(timespec="seconds"),
    }
    return result


def show(result: dict) -> None:
    s, g, o = result["search"], result["grid_pick"], result["oracle"]
    m = result["metric"]
    yes = {True: "PASS", False: "FAIL"}
    print(f"\n== {result['set']}: {result['model']} on {result['label']}; examples {result['examples']}; "
          f"{result['epochs']} epochs (scratch {result['scratch_epochs']}), seeds {result['seeds']}, "
          f"test {m} (mean over seeds)")
    print(f"{'':14}{'strategy':>18}{'lr':>9}{'val %':>8}{'test %':>8}")
    for label, row in (("search winner", s), ("grid pick", g), ("oracle", o)):
        print(f"{label:14}{row['strategy']:>18}{row['lr']:>9.3g}{100 * row['val_mean']:>8.2f}"
              f"{100 * row['test_mean']:>8.2f}")
    if s["test_source"] != "grid cell":
        print(f"  the search's winner is {s['winner']!r}, not a grid cell: its test is {s['test_source']}")
    ri, rt = result["regret_interval"], result["regret_t_interval"]
    print(f"regret {result['regret_points']:.2f} points [{ri['low']:.2f}, {ri['high']:.2f}] (bootstrap); "
          f"t over seeds [{rt['low']:.2f}, {rt['high']:.2f}]; grid pick's regret "
          f"{result['grid_pick_regret_points']:.2f}: {yes[result['pass']['regret']]} (target <= {REGRET_TARGET})")
    vs, vg = result["versus_scratch"]["search"], result["versus_scratch"]["grid"]
    search_points = "" if vs["mean_points"] is None else (f" {vs['mean_points']:+.2f} points val "
                                                          f"[{vs['low']:.2f}, {vs['high']:.2f}]")
    print(f"pretrained vs scratch: search {vs['verdict']}{search_points}; grid {vg['verdict']} "
          f"{vg['mean_points']:+.2f} points test [{vg['low']:.2f}, {vg['high']:.2f}] (t; bootstrap "
          f"[{vg['bootstrap_low']:.2f}, {vg['bootstrap_high']:.2f}]): {yes[result['pass']['verdict']]}")
    c = result["cost"]
    print(f"cost: grid {c['grid']:.1f} epoch-eq ({c['grid_seconds']:.0f} s), search {c['search']:.1f} "
          f"({c['search_seconds']:.0f} s): ratio {c['ratio']:.3f} {yes[result['pass']['cost']]} (target <= 1/3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(SETS), help=f"some of {', '.join(SETS)}")
    parser.add_argument("--out", default="/tmp/tunewise-decision",
                        help="runs and results (bench-runs/ is not git-ignored, so the default is under /tmp)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (on a shared 2-core machine 2 threads ran 4-6x slower than 1); "
                        "0: torch's default")
    args = parser.parse_args()
    names = [n.strip() for n in args.sets.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETS]
    if unknown:
        parser.error(f"unknown set(s) {', '.join(unknown)}; choose from {', '.join(SETS)}")
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "decision_quality.json"
    say(f"start: load average {os.getloadavg()}, {os.cpu_count()} CPUs, sets {names}")
    for name in names:
        result = measure(name, SETS[name], out)
        saved = json.loads(results_path.read_text()) if results_path.is_file() else {}
        saved[name] = result
        write_json(results_path, saved)
        show(result)
    say(f"end: load average {os.getloadavg()}; figures in {results_path}")


if __name__ == "__main__":
    sys.exit(main())
