"""Tasks, registered by name: each turns a backbone into a task model and scores its outputs."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args, get_origin, get_type_hints

import torch
from torch import nn
from torch.utils.data import DataLoader

from tunewise.backbones import Backbone
from tunewise.config import DataConfig, TrainConfig
from tunewise.data.base import DataSplits
from tunewise.errors import DataError, TunewiseError
from tunewise.registry import Registry


class TaskModel(nn.Module):
    """A backbone with a task head: `forward(x) = head(backbone(x))`.

    Strategies address `.backbone` and `.head`; feature caching trains `.head` alone. Inputs and
    outputs are the task's: here a tensor or a dict of tensors (token ids) in, a tensor out; a
    dense task's subclass takes and gives its own (detection: dicts of images and targets in,
    losses or boxes out).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, layer_groups: list[list[str]]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.layer_groups = layer_groups
        """Parameter names of `backbone`, grouped from input to output (Backbone.layer_groups)."""

    def forward(self, x: Any) -> Any:
        return self.head(self.backbone(x))


class Task:
    """What `fit()`, the search, export and predict need of a task; each task subclasses this and
    states its facts as class attributes, so nothing outside its own module names it.

    Every loader yields `(inputs, targets)`; inputs are a tensor or a dict of tensors (token
    ids), and `model(inputs)` gives the outputs that `loss` and `metrics` read.
    """

    name: ClassVar[str] = "base"
    metric: ClassVar[str] = "accuracy"
    """The validation metric that selects the best epoch (and, later, the best run)."""
    metrics_names: ClassVar[tuple[str, ...]] = ()
    """What `--metric` may select; the first other one is the report's second column."""
    lower_is_better: ClassVar[tuple[str, ...]] = ()
    """The metrics of `metrics_names` where lower wins (a generator's perplexity and loss); the rest,
    fractions, are better higher."""
    cacheable: ClassVar[bool] = False
    """Whether a frozen backbone's outputs can be computed once and the head trained on them."""
    augments: ClassVar[bool] = False
    """Whether training batches are augmented (the search can then try without)."""
    modality: ClassVar[str] = "image"
    """What the backbone reads: "image" or "text" (a tokenizer)."""
    dense: ClassVar[bool] = False
    """Predicts per pixel or per box: the whole model is exported, predictions are files."""
    rankable: ClassVar[bool] = True
    """Whether `rank` can score backbones for it from their frozen features."""
    max_length: ClassVar[int | None] = None
    """Text: tokens per input when `--max-length` is not given (None: the tokenizer's)."""
    data_kind: ClassVar[type | None] = None
    """The dataset class of each split this task reads (ImageSet, TextSet, ...)."""
    reads: ClassVar[str] = ""
    """What its data are, for errors ("images with one class each")."""
    path_help: ClassVar[str] = "a folder or file of data for this task"
    """What to pass as `--data` when it is a path."""
    transformers_head: ClassVar[tuple[str, str] | None] = None
    """Text: transformers' auto class for the export and the attribute of its head."""
    pipeline: ClassVar[str | None] = None
    """Text: the transformers pipeline that predicts from the export (None: tunewise decodes)."""
    per_token: ClassVar[bool] = False
    """Text: the head reads every token's features, not the pooled output."""
    labelled: ClassVar[bool] = True
    """Predicts one of its classes (per example, token, box or pixel); False: spans (QA)."""
    outputs: ClassVar[str] = ""
    """What its model gives, which says how it exports and serves (tunewise.ship): "class_scores"
    (one score per class per input), "token_scores" (per token), "spans" (start and end scores per
    token), "masks" (per pixel), "boxes" or "next_token_scores" (a generator's, per vocabulary entry)."""

    knob_type: ClassVar[type | None] = None
    """The frozen dataclass of the task's knobs, its fields the constructor's keywords (detection's
    detector), or None. Write it as `Knobs` at the top level of the task's module: the command line
    reads it there with ast to make its flags before torch is imported."""

    def knobs(self) -> dict:
        """The settings it was made with (`get_task(name, **knobs)`), as plain values for model.json."""
        return {f.name: getattr(self, f.name) for f in fields(self.knob_type)} if self.knob_type else {}

    def export_facts(self, splits: DataSplits) -> dict:
        """What predict must know of the training data, written into model.json (QA: whether it had
        unanswerable questions)."""
        return {}

    def finished(self, model: TaskModel, val, preprocess) -> dict:
        """After fit (adapters merged): metrics only the whole model shows, merged into the record's
        validation metrics; an "examples" list among them is written to generations.json. A
        generator scores its greedy generations here; the default measures nothing more."""
        return {}

    def illustrate(self, run_dir: Path, model: str, data: DataConfig) -> None:
        """After a search, what its report shows beside the numbers, written into `run_dir`: for dense
        tasks the winner's predictions drawn on held-out images (predictions.png); nothing otherwise."""
        if self.dense:
            from tunewise.dense_predict import draw_examples

            draw_examples(run_dir / "model", data, run_dir / "predictions.png")

    def read_path(self, path: Path, config: DataConfig) -> DataSplits:
        """The splits of a local path (a registered data set name never reaches here)."""
        raise DataError(f"--task {self.name} reads no local path; pass a registered data set.")

    def predict(self, run: Path | str, inputs: list, batch_size: int, **options: Any) -> list[dict] | None:
        """Predictions of the exported model in `run` for `inputs`, one dict each; None (the default):
        `tunewise.predict` reads them by modality (image files, texts, or dense outputs as files).
        `options`: the task's own (a generator's max_new_tokens, temperature, top_p)."""
        return None

    def second_metric(self, metric: str) -> str:
        """The report's column beside `metric`."""
        return next((m for m in self.metrics_names if m != metric), metric)

    def build_model(self, backbone: Backbone, classes: list[str]) -> TaskModel:
        """The task model: `backbone` plus a new head for `classes` (tags for NER)."""
        raise NotImplementedError

    def model_of(self, backbone: nn.Module, head: nn.Module) -> TaskModel:
        """The task model around an export's backbone and head, as loaded back (export.load_transformers)."""
        return TaskModel(backbone, head, [])

    def loader(self, data, preprocess, train: TrainConfig, training: bool) -> DataLoader:
        """Batches of one split: shuffled (and augmented) when `training`, in order otherwise."""
        raise NotImplementedError

    def loss(self, outputs, targets) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self, outputs: list, targets: list, data) -> dict:
        """The metrics of a whole split from its batches' outputs and targets, in loader order;
        `data` is the loader's dataset (QA maps windows back to its examples)."""
        raise NotImplementedError


TASKS: Registry[type[Task]] = Registry("task")


@cache
def _register_all() -> None:
    """Import every module of this package, once: each task module registers its task, so a new task
    is one new file here (get_task runs in loops; the folder is listed on the first call only)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def get_task(name: str, **knobs: Any) -> Task:
    """The task `name`, with its knobs (`get_task("object_detection", detector="fcos")`).

    Raises:
        TunewiseError: a knob the task does not take, or a value not among a knob's choices.
    """
    _register_all()
    cls = TASKS.get(name)
    allowed = get_type_hints(cls.knob_type) if cls.knob_type else {}
    for knob, value in knobs.items():
        if knob not in allowed:
            takes = f"its knobs: {', '.join(allowed)}" if allowed else "it has none"
            raise TunewiseError(f"task {name} takes no knob {knob!r} ({takes}).")
        choices = get_args(allowed[knob]) if get_origin(allowed[knob]) is Literal else ()
        if choices and value not in choices:
            raise TunewiseError(f"{name}'s {knob} must be one of {', '.join(choices)}, got {value!r}.")
    return cls(**knobs)


def task_for(name: str, **settings: Any) -> Task:
    """The task `name` as model.json describes it: made with those of `settings` that its constructor
    takes (its knobs, such as the detector; NER's tag names)."""
    _register_all()
    cls = TASKS.get(name)
    accepted = inspect.signature(cls).parameters
    return cls(**{key: value for key, value in settings.items() if key in accepted})


def all_tasks() -> list[Task]:
    """One of every registered task, by name."""
    _register_all()
    return [TASKS.get(name)() for name in TASKS.names()]
