"""Inert, typed settings, one dataclass per concern. Validation lives in `validate_*`."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from tunewise.errors import ConfigError
from tunewise.registry import did_you_mean

Optimizer = Literal["adam", "adamw", "sgd"]


# The defaults that name a registered task or strategy live here, once: the registries' own
# modules are the only other place their names are written.
DEFAULT_TASK = "image_classification"
DEFAULT_STRATEGY = "linear_probe"
"""What `fit` trains when no strategy is given: the cheapest useful one."""
VERIFY_STRATEGY = "lp_ft"
"""What `rank --verify` fine-tunes each kept candidate with."""
BASELINE_STRATEGY = "scratch"
"""The strategy that trains from random weights: a search's baseline, as records and reports name it."""
PROBE_STRATEGY = "linear_probe"
"""The head-only strategy whose test figure a leaderboard keeps (`linear_probe_test`)."""


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how it is split."""

    data: str = "textile"
    """An image folder, TFRecord files of tf.train.Example images (a .tfrecord file or a folder of them),
    a text file or folder (CSV, JSONL, parquet, CoNLL, SQuAD JSON, a saved Hugging Face dataset),
    detection data (COCO JSON, a Pascal VOC folder), segmentation data (images/ and masks/, VOC), or a
    named set: textile, cifar10, cifar100, mnist, fashion_mnist, rotten_tomatoes, ner_demo, qa_demo,
    detection_demo, segmentation_demo."""
    root: str | None = None
    """Folder of a named set's files (cifar10: cifar-10-batches-py inside); downloads go here."""
    val_fraction: float = 0.15
    """Share of the training images held out for validation when no val/ split is given."""
    test_fraction: float = 0.15
    """Share held out for the final test when a single folder of classes is given."""
    seed: int = 0
    """Seed of the stratified split and of subsampling."""
    max_train_per_class: int | None = None
    """Keep at most this many training images per class (quick runs); None keeps all. Data without one
    class per example (NER, QA, detection, segmentation) keeps this many training examples in all."""
    image_size: int | None = None
    """Feed images at this size instead of the backbone's pretrained size (faster, less exact)."""
    strict: bool = False
    """Stop at the first unreadable image instead of skipping it with a warning; generators (causal_lm):
    refuse examples longer than --max-length instead of cutting them."""
    clip_boxes: bool = False
    """Detection: clip boxes that leave their image to it and drop those left without area, with one
    warning counting them, instead of stopping at the first such box."""
    image_key: str = "image/encoded"
    """TFRecord data: the feature of each record's encoded image (JPEG, PNG, ...)."""
    label_key: str = "image/class/label"
    """TFRecord data: the feature of each record's class id (one int64)."""
    class_name_key: str = "image/class/text"
    """TFRecord data: the feature of each record's class name; classes without one (all of them, with '')
    are named by their ids."""
    text_column: str = "text"
    """Text data (CSV, JSONL, parquet, a saved Hugging Face dataset): the column of the text."""
    text_pair_column: str | None = None
    """The column of the second text, for pair classification (entailment, paraphrase)."""
    label_column: str = "label"
    """The column of the class name (or index) of each text."""
    tokens_column: str = "tokens"
    """Token classification from JSONL/parquet/HF datasets: the column of each sentence's words."""
    tags_column: str = "tags"
    """Token classification: the column of each sentence's tags (names or indices), one per word."""
    prompt_column: str = "prompt"
    """Causal LM fine-tuning: the column of each prompt (its tokens are read, not learned)."""
    completion_column: str = "completion"
    """Causal LM: the column of each completion, the text the model learns to write after its prompt."""
    messages_column: str = "messages"
    """Causal LM: the column of chat messages ({"role", "content"} lists, the last one the assistant's
    reply to learn), used when the data has no prompt column."""
    max_length: int | None = None
    """Longest input in tokens (text); longer inputs are truncated, QA contexts windowed. None: 256
    (384 for question answering), at most the model's own limit."""
    doc_stride: int = 128
    """Question answering: tokens shared by consecutive windows of a long context (at most half
    of max_length)."""


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained."""

    epochs: int = 10
    """Passes over the training set."""
    batch_size: int = 32
    """Examples (images, texts) per optimizer step."""
    optimizer: Optimizer = "adamw"
    """adam, adamw or sgd (momentum 0.9, nesterov)."""
    lr: float | None = None
    """Peak learning rate; None takes the strategy's default."""
    weight_decay: float = 0.01
    """Decoupled weight decay (adamw) or L2 (adam, sgd); biases and norms are not decayed."""
    warmup_epochs: float = 1.0
    """Linear warmup length before the cosine decay, in epochs (fractions allowed)."""
    patience: int | None = 5
    """Stop after this many epochs without a better validation metric; None (0 on the command line)
    never stops early."""
    seed: int = 0
    """Seed of initialisation, shuffling and augmentation."""
    augment: bool = True
    """Random resized crops and flips when the backbone trains (never on cached features)."""
    num_workers: int | None = None
    """Data-loading worker processes; by default 2, and none on a machine without a GPU that gives tunewise
    at most 2 cores: there 2 workers were never faster and made fits up to 1.45x slower, decoding on the
    cores training computes on (bench/loader_workers.py)."""
    cache_dir: str | None = None
    """Where extracted features are cached; None: ~/.cache/tunewise/features."""
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    """auto picks a GPU where there is one."""
    metric: str | None = None
    """The validation metric that picks the best epoch and run: accuracy, macro_f1, balanced_accuracy
    (classification), f1, precision, recall (NER), f1, exact_match (QA), miou, map, ...; None: the
    task's choice for the data (classification: macro_f1 when the classes are imbalanced, accuracy
    otherwise)."""


SEED_MAX = 2**32 - 1
"""The largest seed: numpy takes unsigned 32-bit seeds (a split's seed reaches numpy; a training seed
is kept to the same range so that one rule holds for both)."""


@dataclass(frozen=True)
class Number:
    """What a numeric setting allows: an int or a float (a float setting takes an int too), finite,
    where `allows` says so; None where the setting is optional (its default, or "off")."""

    kind: type[int] | type[float]
    allows: Callable[[float], bool]
    says: str
    """The allowed range in words, as the message ends: "--epochs must be a positive integer"."""
    optional: bool = False

    def problem(self, flag: str, value: object) -> str | None:
        if value is None and self.optional:
            return None
        kinds = (int,) if self.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            return f"{flag} must be {'an integer' if self.kind is int else 'a number'}, got {value!r}"
        if not math.isfinite(value):
            return f"{flag} must be a finite number, got {value!r}"
        return None if self.allows(value) else f"{flag} must be {self.says}, got {value!r}"


POSITIVE = Number(int, lambda v: v >= 1, "a positive integer")
SEED = Number(int, lambda v: 0 <= v <= SEED_MAX, f"from 0 to {SEED_MAX}")
FRACTION = Number(float, lambda v: 0 <= v < 1, "in [0, 1)")

TRAIN_NUMBERS = {
    "epochs": POSITIVE, "batch_size": POSITIVE, "lr": Number(float, lambda v: v > 0, "positive", optional=True),
    "weight_decay": Number(float, lambda v: v >= 0, ">= 0"), "warmup_epochs": Number(float, lambda v: v >= 0, ">= 0"),
    "patience": replace(POSITIVE, optional=True), "seed": SEED,
    "num_workers": Number(int, lambda v: v >= 0, ">= 0", optional=True),
}
"""The rule of every numeric TrainConfig field (a test checks that none is missing)."""
DATA_NUMBERS = {
    "val_fraction": FRACTION, "test_fraction": FRACTION, "seed": SEED,
    "max_train_per_class": replace(POSITIVE, optional=True),
    "image_size": Number(int, lambda v: v >= 8, "at least 8 pixels", optional=True),
    "max_length": Number(int, lambda v: v >= 8, "at least 8 tokens", optional=True), "doc_stride": POSITIVE,
}
SEARCH_NUMBERS = {name: POSITIVE for name in ("epochs", "rates", "seeds", "finalists", "workers", "keep_models")} | {
    "scratch_epochs": replace(POSITIVE, optional=True)}
"""SearchConfig's, here with the others: the command line checks them before torch is imported
(SearchConfig's own module imports it)."""
DATA_FLAGS = {"root": "--data-root", "seed": "--split-seed"}
"""DataConfig fields whose flag is not --field-name (--seed is TrainConfig's)."""


def number_problems(values: Mapping[str, object], rules: Mapping[str, Number],
                    flags: Mapping[str, str] | None = None) -> list[str]:
    """What is wrong with the numeric settings in `values` (a config's fields, or parsed flags), each
    named by its flag."""
    return [problem for name, rule in rules.items() if name in values
            if (problem := rule.problem((flags or {}).get(name) or _flag(name), values[name]))]


def choice_problems(config: DataConfig | TrainConfig) -> list[str]:
    """Each Literal field whose value is not one of its choices (a flag's choices are argparse's,
    but a YAML config's values arrive unchecked)."""
    hints = get_type_hints(type(config))
    return [f"{_flag(f.name)} must be one of {', '.join(map(str, choices))}, got {value!r}"
            for f in fields(config) if get_origin(hints[f.name]) is Literal
            if (value := getattr(config, f.name)) not in (choices := get_args(hints[f.name]))]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate_train(config: TrainConfig) -> list[str]:
    """Every problem with the training settings, each naming its flag."""
    return number_problems(to_dict(config), TRAIN_NUMBERS) + choice_problems(config)


def validate_data(config: DataConfig) -> list[str]:
    problems = number_problems(to_dict(config), DATA_NUMBERS, DATA_FLAGS) + choice_problems(config)
    if not problems and config.val_fraction + config.test_fraction >= 1:
        problems.append("--val-fraction plus --test-fraction must leave images for training")
    return problems


RUN_KEYS = ("model", "weights", "task", "task_knobs", "strategy", "knobs", "data", "train")
"""The settings of one run, as a run's settings.json and a search's best.yaml hold them."""
NEEDED_RUN_KEYS = ("model", "strategy", "data", "train")
FORMER_TRAIN_FIELDS = ("detector",)
"""Task knobs that TrainConfig held before 2026-12-02: older settings files have them under train."""


def with_task_knobs(settings: dict[str, Any]) -> dict[str, Any]:
    """A run's or a search's settings as read from a file, with the task knobs that older tunewise
    wrote under `train` moved to `task_knobs`, where they are now."""
    train = settings.get("train")
    if not isinstance(train, dict):  # no train part: run_settings says so
        return {"task_knobs": {}, **settings}
    moved = {key: value for key, value in train.items() if key in FORMER_TRAIN_FIELDS}
    return {**settings, "train": {key: value for key, value in train.items() if key not in moved},
            "task_knobs": {**moved, **settings.get("task_knobs", {})}}


def run_settings(values: object, where: str) -> tuple[dict[str, Any], DataConfig, TrainConfig]:
    """The settings of one run read from a file (`where`), checked: a key that no setting has is an
    error naming it and the allowed ones, never ignored (a misspelt key would silently run with the
    default), and a bad value is named with the file. Returns the settings, and their data and train
    parts as configs."""
    settings = with_task_knobs(_mapping(values, where, RUN_KEYS))
    missing = [key for key in NEEDED_RUN_KEYS if key not in settings]
    if missing:
        raise ConfigError(f"{where} lacks {', '.join(map(repr, missing))}. A run's settings need model, strategy, "
                          "data and train, as a search's best.yaml has.")
    _mapping(settings.get("knobs", {}), f"{where}: knobs", ())
    _mapping(settings.get("task_knobs", {}), f"{where}: task_knobs", ())
    data = DataConfig(**_mapping(settings["data"], f"{where}: data", _names(DataConfig)))
    train = TrainConfig(**_mapping(settings["train"], f"{where}: train", _names(TrainConfig)))
    raise_if_problems(validate_data(data) + validate_train(train), where)
    return settings, data, train


def _names(cls: type[DataConfig] | type[TrainConfig]) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def _mapping(values: object, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    """`values` when it is a mapping whose keys are all `allowed` (any key where none are given)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of names to values, got {values!r}.")
    unknown = [key for key in values if allowed and key not in allowed]
    if unknown:
        key = str(unknown[0])
        raise ConfigError(f"{where} has an unknown key {key!r}.{did_you_mean(key, allowed)} Allowed: "
                          f"{', '.join(allowed)}.")
    return values


def raise_if_problems(problems: list[str], where: str = "") -> None:
    """One error listing every problem, so the user fixes them all in one go; `where`: the file they are in."""
    if problems:
        raise ConfigError(f"{where}: " * bool(where) + "; ".join(problems) + ".")


def to_dict(config: DataConfig | TrainConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in fields(config)}


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "tunewise"
