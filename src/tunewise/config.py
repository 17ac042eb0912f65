"""Inert, typed settings, one dataclass per concern. Validation lives in `validate_*`."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from tunewise.errors import ConfigError

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
    """An image folder, a text file or folder (CSV, JSONL, parquet, CoNLL, SQuAD JSON, a saved Hugging
    Face dataset), detection data (COCO JSON, a Pascal VOC folder), segmentation data (images/ and masks/,
    VOC), or a named set: textile, cifar10, cifar100, mnist, fashion_mnist, rotten_tomatoes, ner_demo,
    qa_demo, detection_demo, segmentation_demo."""
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
    """Stop at the first unreadable image instead of skipping it with a warning."""
    clip_boxes: bool = False
    """Detection: clip boxes that leave their image to it and drop those left without area, with one
    warning counting them, instead of stopping at the first such box."""
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
    num_workers: int = 2
    """Data-loading worker processes."""
    cache_dir: str | None = None
    """Where extracted features are cached; None: ~/.cache/tunewise/features."""
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    """auto picks a GPU where there is one."""
    detector: Literal["faster_rcnn", "fcos"] = "faster_rcnn"
    """Object detection: Faster R-CNN (two-stage) or FCOS (one-stage, anchor-free), both torchvision's."""
    metric: str | None = None
    """The validation metric that picks the best epoch and run: accuracy, macro_f1, balanced_accuracy
    (classification), f1, precision, recall (NER), f1, exact_match (QA), miou, map, ...; None: the
    task's choice for the data (classification: macro_f1 when the classes are imbalanced, accuracy
    otherwise)."""


def validate_train(config: TrainConfig) -> list[str]:
    """Every problem with the training settings, each naming its flag."""
    problems = []
    for name in ("epochs", "batch_size"):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
    if config.lr is not None and not config.lr > 0:
        problems.append(f"--lr must be positive, got {config.lr!r}")
    if config.optimizer not in ("adam", "adamw", "sgd"):
        problems.append(f"--optimizer must be adam, adamw or sgd, got {config.optimizer!r}")
    if config.weight_decay < 0:
        problems.append(f"--weight-decay must be >= 0, got {config.weight_decay!r}")
    if config.warmup_epochs < 0:
        problems.append(f"--warmup-epochs must be >= 0, got {config.warmup_epochs!r}")
    if config.patience is not None and config.patience < 1:
        problems.append(f"--patience must be a positive integer, got {config.patience!r}")
    if config.num_workers < 0:
        problems.append(f"--num-workers must be >= 0, got {config.num_workers!r}")
    if config.detector not in ("faster_rcnn", "fcos"):
        problems.append(f"--detector must be faster_rcnn or fcos, got {config.detector!r}")
    return problems


def validate_data(config: DataConfig) -> list[str]:
    problems = []
    for name in ("val_fraction", "test_fraction"):
        value = getattr(config, name)
        if not 0 <= value < 1:
            problems.append(f"--{name.replace('_', '-')} must be in [0, 1), got {value!r}")
    if config.val_fraction + config.test_fraction >= 1:
        problems.append("--val-fraction plus --test-fraction must leave images for training")
    if config.max_train_per_class is not None and config.max_train_per_class < 1:
        problems.append(f"--max-train-per-class must be a positive integer, got {config.max_train_per_class!r}")
    if config.max_length is not None and config.max_length < 8:
        problems.append(f"--max-length must be at least 8 tokens, got {config.max_length!r}")
    if config.doc_stride < 1:
        problems.append(f"--doc-stride must be a positive integer, got {config.doc_stride!r}")
    if config.image_size is not None and config.image_size < 8:
        problems.append(f"--image-size must be at least 8 pixels, got {config.image_size!r}")
    return problems


def raise_if_problems(problems: list[str]) -> None:
    """One error listing every problem, so the user fixes them all in one go."""
    if problems:
        raise ConfigError("; ".join(problems) + ".")


def to_dict(config: DataConfig | TrainConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in fields(config)}


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "tunewise"
