"""fit() and evaluate(): the training loop, readable top to bottom."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from tunewise.assemble import check_backbone_fits, configured_preprocess
from tunewise.backbones import Backbone, Preprocess, load_backbone
from tunewise.backbones.hf import Tokenize
from tunewise.config import (
    DEFAULT_STRATEGY,
    DEFAULT_TASK,
    DataConfig,
    TrainConfig,
    default_cache_dir,
    raise_if_problems,
    run_settings,
    to_dict,
    validate_data,
    validate_train,
    with_task_knobs,
)
from tunewise.data import DataSplits, load_data
from tunewise.epochs import epoch_seed, seed_all, set_epoch
from tunewise.errors import ConfigError, RunFolderError, TunewiseError, stop_if_signalled
from tunewise.export import export_model
from tunewise.features import cache_key, cached_features, feature_loader, to_cpu, to_device, weights_digest
from tunewise.io import claim_folder, default_run_dir, read_jsonl, write_atomic, write_json
from tunewise.records import GENERATIONS, RunRecord
from tunewise.registry import did_you_mean
from tunewise.safe_load import load_tensors
from tunewise.strategies import Strategy, get_strategy
from tunewise.strategies.freezing import count_parameters, is_frozen, set_train_mode, zero_rate_parameters
from tunewise.tasks import Task, TaskModel, get_task

log = logging.getLogger("tunewise")
T = TypeVar("T")


@dataclass
class Progress:
    """Where training stands; saved with every checkpoint so a killed run resumes exactly."""

    epoch: int = 0
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    start: float | None = None
    """The validation metric before the first epoch, where training starts from a trained head (LP-FT)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """Each finished epoch's line of metrics.jsonl: kept in the checkpoint, so the log never holds
    an epoch the checkpoint does not (nor misses one it does)."""
    stopped: str | None = None
    """Why the run stopped early ("patience", "pruned"): a run killed after deciding it resumes to
    its finish, not to more epochs."""

    def improved_by(self, score: float, greater_is_better: bool) -> bool:
        better = self.best is None or (score > self.best if greater_is_better else score < self.best)
        if better:
            self.best, self.best_epoch, self.bad_epochs = score, self.epoch, 0
        else:
            self.bad_epochs += 1
        return better


def fit(
    model: str,
    data: str | DataConfig = "textile",
    strategy: str | Strategy = DEFAULT_STRATEGY,
    *,
    task: str | Task = DEFAULT_TASK,
    train: TrainConfig | None = None,
    out: str | Path | None = None,
    weights: str | Path | None = None,
    resume: bool = False,
    test: bool = True,
    should_stop: Callable[[int, float], bool] | None = None,
    label: str | None = None,
    **train_overrides: Any,
) -> RunRecord:
    """Fine-tune `model` on `data` with `strategy`; keep the best epoch by validation metric.

    Args:
        model: a backbone name (`pkg:efficientnet_lite0`, `timm:resnet50`) or weights path.
        data: a data set name or image folder, or a full DataConfig.
        strategy: a registered strategy name (`linear_probe`, `full`, `lora`, ...) or an instance
            with its knobs set (`get_strategy("partial", k=3)`).
        task: a registered task name, or an instance with its knobs set
            (`get_task("object_detection", detector="fcos")`).
        train: training settings; keyword arguments override single fields (`epochs=5`).
        out: the run folder; default runs/<time>-<model>-<strategy>.
        weights: local weights for the backbone instead of a download.
        resume: continue the run in `out` from its last finished epoch.
        test: evaluate the best epoch on the test split (a search evaluates test only once,
            for its winner and baselines, and passes False).
        should_stop: called after each epoch with (epoch, validation metric); True stops the
            run there (a search's pruner), recorded as `stopped="pruned"`.
        label: what the progress bar says (a search names the stage, trial, rate and seed);
            default: the strategy.

    Returns:
        The RunRecord, also written to `out/record.json`.

    Raises:
        TunewiseError: bad settings, data or model, before anything is written.
    """
    the_strategy = get_strategy(strategy) if isinstance(strategy, str) else strategy
    the_task = get_task(task) if isinstance(task, str) else task
    run_dir = Path(out) if out is not None else default_run_dir(model, the_strategy.name)
    with _discarded_if_unstarted(run_dir, fresh=not resume):
        run = _assemble(model, data, the_strategy, the_task, replace(train or TrainConfig(), **train_overrides),
                        run_dir, weights, resume, test)
        stopped = _train(run, should_stop, label)
    return _finish(run, stopped, test)


@contextlib.contextmanager
def _discarded_if_unstarted(run_dir: Path, fresh: bool) -> Iterator[None]:
    """A new run that fails (or is interrupted) before its first checkpoint leaves no trace: there
    is nothing in it to resume, and rerunning the same command must not be refused as "already
    holds a run". Only what this run wrote is removed; what was in the folder before stays."""
    before = set(run_dir.iterdir()) if run_dir.is_dir() else None
    try:
        yield
    except BaseException:
        started = run_dir.is_dir() and any(run_dir.rglob("checkpoint.pt"))
        if fresh and not started and os.environ.get("RANK", "0") == "0":  # under DDP, rank 0 owns the folder
            if before is None:
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                for path in set(run_dir.iterdir()) - before:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        raise


@dataclass
class _Run:
    """What fit() assembled from names: the parts the loop trains and the finish reads."""

    model: str
    task: Task
    strategy: Strategy
    data: DataConfig
    train: TrainConfig
    splits: DataSplits
    metric: str
    metric_reason: str
    backbone: Backbone
    net: TaskModel
    accelerator: Accelerator
    run_dir: Path
    loaders: dict[str, DataLoader[Any]]
    trained: nn.Module
    """The module the optimizer steps: the whole net, or the head alone on cached features."""
    cached: bool
    optimizer: torch.optim.Optimizer
    schedule: WarmupCosine
    progress: Progress
    started: float


def _assemble(model: str, data: str | DataConfig, the_strategy: Strategy, the_task: Task, train: TrainConfig,
              out: Path, weights: str | Path | None, resume: bool, test: bool = True) -> _Run:
    """Check the settings, read the data, load the backbone, build the task model and the strategy's
    optimizer, open (or reopen) the run folder: everything before the first epoch. Without `test`, the
    test split is left out (a cached backbone would extract its features for nothing)."""
    started = time.perf_counter()
    data_config = data if isinstance(data, DataConfig) else DataConfig(data=data)
    raise_if_problems(validate_train(train) + validate_data(data_config))
    splits = load_data(data_config, the_task)
    if not test:
        splits = replace(splits, test=None)
    metric, metric_reason = selection_metric(the_task, splits, train.metric)
    seed_all(train.seed)  # before any random draw: a scratch backbone is initialised as it loads (Keras's
    # initializers, LoRA's included, draw their seeds from Python's generator)
    backbone = load_backbone(model, pretrained=the_strategy.pretrained, weights=weights)
    check_backbone_fits(backbone, the_task, model)
    preprocess = configured_preprocess(backbone.preprocess, data_config, the_task)
    backbone = replace(backbone, preprocess=preprocess)  # detectors size their anchors by it
    net = the_task.build_model(backbone, splits.classes)
    the_strategy.prepare(net)

    settings = {"model": model, "weights": str(weights) if weights else None, "strategy": the_strategy.name,
                "knobs": the_strategy.knobs(), "task": the_task.name, "task_knobs": the_task.knobs(),
                "train": to_dict(train), "data": to_dict(data_config)}
    accelerator = _accelerator(train.device)
    run_dir = _shared(accelerator, lambda: _open_run_dir(out, settings, resume))
    cached = is_frozen(net.backbone) and the_task.cacheable
    if cached:  # the backbone is a fixed function: run it once, train the head on its output
        with accelerator.main_process_first():  # rank 0 fills the cache, the others read it
            loaders = _feature_loaders(net, splits, preprocess, the_task, train, accelerator.device)
        trained: nn.Module = net.head
    else:
        loaders = {name: the_task.loader(data, preprocess, train, training=name == "train")
                   for name, data in splits.named().items()}
        trained = net

    def probe(strategy: Strategy, epochs: int, lr: float) -> dict[str, torch.Tensor]:
        return _probe_head(model, data_config, the_task, replace(train, epochs=epochs, lr=lr), strategy, run_dir,
                           weights)

    from_probe = the_strategy.warm_start(net, probe)  # LP-FT: fine-tune from a probed head
    optimizer = _optimizer(the_strategy.param_groups(net, train.lr or the_strategy.default_lr), train)
    if accelerator.num_processes > 1:  # each process trains on its shard; evaluation is not sharded
        loaders["train"] = accelerator.prepare_data_loader(loaders["train"])
    steps = len(loaders["train"])
    schedule = WarmupCosine(round(train.warmup_epochs * steps), steps, train.epochs)
    trained, optimizer = accelerator.prepare(trained, optimizer)
    resumable = (run_dir / "checkpoint.pt").is_file()
    progress = _restore(run_dir, accelerator, _unwrap(accelerator, trained), optimizer) if resumable else Progress()
    if resume and accelerator.is_main_process:  # drops the lines of epochs after the checkpoint's
        _write_metrics(run_dir, progress.history)
    if from_probe and not resumable:  # the probe's state is the first candidate for the best epoch
        progress.start = evaluate_loader(trained, loaders["val"], the_task, accelerator)[metric]
        progress.best = progress.start
        if accelerator.is_main_process:
            write_atomic(run_dir / "best.pt", lambda tmp: torch.save(_unwrap(accelerator, trained).state_dict(), tmp))
    return _Run(model, the_task, the_strategy, data_config, train, splits, metric, metric_reason, backbone, net,
                accelerator, run_dir, loaders, trained, cached, optimizer, schedule, progress, started)


def _train(run: _Run, should_stop: Callable[[int, float], bool] | None, label: str | None) -> str | None:
    """The epochs from where the run stands: train, validate, decide whether to stop, keep the best,
    checkpoint, then log. Returns why it stopped early ("patience", "pruned") or None."""
    train, progress, accelerator, metric = run.train, run.progress, run.accelerator, run.metric
    if progress.stopped:  # killed after deciding to stop: the resumed run only finishes
        return progress.stopped
    main = accelerator.is_main_process  # under DDP (accelerate launch, torchrun) only rank 0 writes
    bar = tqdm(range(progress.epoch, train.epochs), desc=label or run.strategy.name, unit="epoch",
               initial=progress.epoch, total=train.epochs, disable=None)
    for epoch in bar:
        progress.epoch = epoch
        seed_all(epoch_seed(train.seed, epoch))  # shuffling, augmentation and dropout depend on the epoch alone
        set_epoch(run.loaders["train"], epoch)
        run.strategy.on_epoch_start(run.net, run.optimizer, epoch)
        epoch_start = time.perf_counter()
        train_loss = _train_one_epoch(run.net, run.trained, run.loaders["train"], run.optimizer,
                                      run.schedule.at_epoch(epoch), run.task, run.strategy, accelerator)
        val = evaluate_loader(run.trained, run.loaders["val"], run.task, accelerator)
        improved = progress.improved_by(val[metric], metric not in run.task.lower_is_better)
        progress.epoch = epoch + 1
        progress.history.append({
            "epoch": epoch, "train_loss": train_loss, "lr": run.optimizer.param_groups[0]["lr"],
            "steps": len(run.loaders["train"]), "seconds": round(time.perf_counter() - epoch_start, 3),
            **{f"val_{k}": float(v) for k, v in val.items() if isinstance(v, int | float)},  # numpy's: no pickle
        })
        # the metric's name is a keyword: mypy cannot tell it from set_postfix's own parameters
        bar.set_postfix(loss=f"{train_loss:.3f}", **{metric: f"{val[metric]:.3f}"})  # type: ignore[arg-type]
        if bar.disable:  # no terminal: one log line per epoch instead of a bar
            log.info("%s epoch %d/%d: train loss %.4f, val %s %.4f", run.strategy.name, epoch + 1, train.epochs,
                     train_loss, metric, val[metric])
        score = val[metric]
        if train.patience and progress.bad_epochs >= train.patience:
            progress.stopped = "patience"
        elif should_stop is not None and _shared(accelerator, lambda: should_stop(epoch, score)):  # noqa: B023
            progress.stopped = "pruned"
        if main:  # a kill between these writes leaves the last checkpoint's epoch to redo, exactly
            if improved:
                write_atomic(run.run_dir / "best.pt",
                             lambda tmp: torch.save(_unwrap(accelerator, run.trained).state_dict(), tmp))
            _save_checkpoint(run.run_dir, accelerator, run.trained, run.optimizer, progress)
            _write_metrics(run.run_dir, progress.history)
        if progress.stopped:
            break
    bar.close()
    return progress.stopped


def _finish(run: _Run, stopped: str | None, test: bool) -> RunRecord:
    """The best epoch's weights back in the model: its validation statistics, the test split (when
    asked), the export and the record."""
    accelerator, task, metric, run_dir = run.accelerator, run.task, run.metric, run.run_dir
    main = accelerator.is_main_process
    accelerator.wait_for_everyone()  # best.pt is written
    best = _read_run_file(run_dir / "best.pt", "Delete the run folder and start the run again.")
    _unwrap(accelerator, run.trained).load_state_dict(best)
    outputs, targets = predict_loader(run.trained, run.loaders["val"], task, accelerator)
    val = task.metrics(outputs, targets, run.loaders["val"].dataset)
    if main and hasattr(task, "example_stats"):  # what a search's intervals resample
        stats = task.example_stats(outputs, targets, run.loaders["val"].dataset)
        write_atomic(run_dir / EXAMPLE_STATS, lambda tmp: Path(tmp).write_bytes(_npy(stats)))
    test_metrics = None
    if test and "test" in run.loaders:
        test_metrics = evaluate_loader(run.trained, run.loaders["test"], task, accelerator)
    why_diverged = divergence([row["train_loss"] for row in run.progress.history])
    if main and why_diverged:
        log.warning("the run in %s diverged: %s; its model is unlikely to be of use. Lower the rate (--lr; its peak "
                    "was %.3g).", run_dir, why_diverged, run.train.lr or run.strategy.default_lr)
    trainable, total = count_parameters(run.net)  # before finalize: merged adapters no longer train
    run.strategy.finalize(run.net)
    if main:  # what only the whole model shows (a generator's generations), then the export
        finished = task.finished(run.net, run.splits.val, run.backbone.preprocess)
        if "examples" in finished:
            write_json(run_dir / GENERATIONS, finished.pop("examples"))
        val |= finished
        export_model(run.net, run.backbone, run.backbone.preprocess, task, run.splits.classes, run_dir,
                     facts=task.export_facts(run.splits))
    record = RunRecord(
        run_dir=str(run_dir), model=run.model, arch=run.backbone.arch, strategy=run.strategy.name,
        task=run.task.name, data=run.data.data, classes=run.splits.classes, metric=metric,
        metric_reason=run.metric_reason, second_metric=task.second_metric(metric),
        baseline=task.baseline(run.splits) if hasattr(task, "baseline") else None, start_val=run.progress.start,
        best_epoch=run.progress.best_epoch, epochs_run=run.progress.epoch, val=val, test=test_metrics,
        seconds=round(time.perf_counter() - run.started, 2), trainable_params=trainable,
        total_params=total, train_config=to_dict(run.train), data_config=to_dict(run.data),
        strategy_knobs=run.strategy.knobs(), cached_features=run.cached, stopped=stopped,
        curve=[row[f"val_{metric}"] for row in run.progress.history], diverged=why_diverged,
        compute=round((run.progress.epoch if not run.cached else 1 / 3) + _probe_compute(run_dir), 3),
        processes=accelerator.num_processes,
    )
    if main:
        record.save(run_dir / "record.json")
    accelerator.wait_for_everyone()  # no process goes on before the run folder is complete
    return record


def resume(run_dir: str | Path) -> RunRecord:
    """Continue a killed or stopped run from its last finished epoch, with its own settings."""
    run_dir = Path(run_dir)
    settings_path = run_dir / "settings.json"
    if not settings_path.is_file():
        raise TunewiseError(f"{str(run_dir)!r} is not a tunewise run folder (no settings.json). "
                            "Pass the folder that `tunewise fit` printed.")
    args, kwargs = _fit_arguments(json.loads(settings_path.read_text()), repr(str(settings_path)))
    return fit(*args, **kwargs, out=run_dir, resume=True)


def fit_from_config(path: str | Path, out: str | Path | None = None) -> RunRecord:
    """Run the settings of a YAML file such as a search's best.yaml."""
    import yaml

    try:
        settings = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise TunewiseError(f"cannot read {str(path)!r} as a fit config ({type(err).__name__}: {err}). Pass a "
                            "YAML file such as a search's best.yaml.") from None
    args, kwargs = _fit_arguments(settings, repr(str(path)))
    return fit(*args, **kwargs, out=out)


def _fit_arguments(values: object, where: str) -> tuple[tuple[str, DataConfig, Strategy], dict[str, Any]]:
    """fit()'s arguments from a settings record read from `where`: a run's settings.json or a search's
    best.yaml."""
    s, data, train = run_settings(values, where)
    strategy = get_strategy(s["strategy"], **s.get("knobs", {}))
    task = get_task(s.get("task", DEFAULT_TASK), **s.get("task_knobs", {}))
    return (s["model"], data, strategy), {"task": task, "train": train,
                                          "weights": s.get("weights")}


EXAMPLE_STATS = "val_examples.npy"
"""Per validation example statistics of the kept model (a task's `example_stats`), in loader order."""


def selection_metric(task: Task, splits: DataSplits, asked: str | None) -> tuple[str, str]:
    """The metric that picks the best epoch and run, and why: `--metric` when given, else the
    task's choice for these data (classification: macro-F1 when classes are imbalanced)."""
    allowed: tuple[str, ...] = task.metrics_names or (task.metric,)
    if asked is not None:
        if asked not in allowed:
            raise ConfigError(f"--metric {asked!r} is not a metric of {task.name}.{did_you_mean(asked, allowed)} "
                              f"Allowed: {', '.join(allowed)}.")
        return asked, f"{asked}, as --metric asked"
    if hasattr(task, "choose_metric"):
        chosen: tuple[str, str] = task.choose_metric(splits)
        return chosen
    return task.metric, f"{task.metric}, the task's metric"


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)  # np.save to a path would add ".npy" to the temporary file's name
    return buffer.getvalue()


DIVERGENCE_FACTOR = 10.0


def divergence(train_losses: list[float]) -> str | None:
    """Why a run counts as diverged, or None: its last epoch's training loss is not finite, or at
    least ten times its first epoch's.

    A NaN loss stops a run mid-epoch already; a rate far too high can instead make the loss grow
    without overflowing (a linear probe at lr 1000 went from 2e4 to 1e20 in six epochs on data it
    otherwise learns perfectly), and such a run still exports a model. A run that learns ends below
    its first epoch's loss, and one that stalls or wobbles stays within a few times it (SGD at lr 10
    rose three-fold, then fell); runaway growth passes ten times within an epoch or two. The run is
    compared with itself, so the rule holds for every task's loss. It cannot see a one-epoch run, nor
    a loss that explodes within the first epoch and then stays flat (the first epoch is the reference).
    """
    if len(train_losses) < 2:
        return None
    first, last = train_losses[0], train_losses[-1]
    if math.isfinite(last) and not (first > 0 and last >= DIVERGENCE_FACTOR * first):
        return None
    return f"its training loss rose from {first:.3g} in the first epoch to {last:.3g} in the last"


@torch.no_grad()
def predict_loader(model: nn.Module, loader: DataLoader[Any], task: Task,
                   accelerator: Accelerator) -> tuple[list[Any], list[Any]]:
    """`model`'s outputs (compacted as the task keeps them) and the targets of every batch of `loader`."""
    model.eval()
    compact = getattr(task, "compact", lambda outputs: outputs)  # what a split's metrics need of a batch
    outputs, targets = [], []
    for inputs, labels in loader:
        with accelerator.autocast():
            outputs.append(to_cpu(compact(model(to_device(inputs, accelerator.device)))))
        targets.append(labels)
    return outputs, targets


def evaluate_loader(model: nn.Module, loader: DataLoader[Any], task: Task, accelerator: Accelerator) -> dict[str, Any]:
    """The task's metrics of `model` over every batch of `loader`."""
    return task.metrics(*predict_loader(model, loader, task, accelerator), loader.dataset)


def _train_one_epoch(net: TaskModel, model: nn.Module, loader: DataLoader[Any], optimizer: torch.optim.Optimizer,
                     factors: list[float], task: Task, strategy: Strategy, accelerator: Accelerator) -> float:
    """One pass over `loader`. `model` is what trains (`net`, or `net.head` on cached features);
    the strategy's penalty, if any, sees the whole `net`."""
    set_train_mode(model, masked=zero_rate_parameters(optimizer), keep_statistics=strategy.keep_norm_statistics)
    total, count = 0.0, 0
    batches = tqdm(loader, desc="train", unit="batch", leave=False, disable=None)
    for (inputs, targets), factor in zip(batches, factors, strict=True):
        stop_if_signalled()
        inputs, targets = to_device(inputs, accelerator.device), to_device(targets, accelerator.device)
        with accelerator.autocast():
            loss = task.loss(model(inputs), targets)
            penalty = strategy.penalty(net)
            objective = loss if penalty is None else loss + penalty
        if not torch.isfinite(objective):
            raise TunewiseError(f"the training loss became {objective.item()}; lower --lr (now "
                                f"{optimizer.param_groups[0]['lr']:.2e}) or check the data.")
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(objective)
        set_rates(optimizer, factor)
        optimizer.step()
        total += loss.item() * len(targets)
        count += len(targets)
    return total / max(1, count)


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warmup from 0, then cosine decay to 0: a pure function of the global step, so a
    resumed run needs no scheduler state."""

    warmup_steps: int
    steps_per_epoch: int
    epochs: int

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        progress = (step - self.warmup_steps) / max(1, self.steps_per_epoch * self.epochs - self.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def at_epoch(self, epoch: int) -> list[float]:
        """The factor of every step of `epoch`, in order."""
        first = epoch * self.steps_per_epoch
        return [self(first + i) for i in range(self.steps_per_epoch)]


def set_rates(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Each group's rate: its peak rate x the schedule's factor x its strategy `scale`."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor * group.get("scale", 1.0)


def _accelerator(device: str) -> Accelerator:
    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "no"
    # without an accelerator, cpu=True is what lets accelerate see a multi-process (gloo) launch
    cpu = device == "cpu" or (device == "auto" and not cuda and not torch.backends.mps.is_available())
    return Accelerator(cpu=cpu, mixed_precision=precision)


def _shared(accelerator: Accelerator, decide: Callable[[], T]) -> T:
    """`decide()` on the main process, its result handed to every process (a run folder, a
    pruner's verdict): under DDP only rank 0 creates folders and talks to Optuna."""
    if accelerator.num_processes == 1:
        return decide()
    from accelerate.utils import broadcast_object_list

    decided: T = broadcast_object_list([decide() if accelerator.is_main_process else None])[0]
    return decided


def _unwrap(accelerator: Accelerator, model: nn.Module) -> nn.Module:
    unwrapped: nn.Module = accelerator.unwrap_model(model)
    return unwrapped


def _feature_loaders(net: TaskModel, splits: DataSplits, preprocess: Preprocess | Tokenize, task: Task,
                     train: TrainConfig, device: torch.device) -> dict[str, DataLoader[Any]]:
    cache = Path(train.cache_dir) if train.cache_dir else default_cache_dir() / "features"
    net.backbone.to(device)
    digest = weights_digest(net.backbone)
    extraction = replace(train, batch_size=max(64, train.batch_size))
    loaders = {}
    for name, data in splits.named().items():
        key = cache_key(f"{digest}|{task.name}", preprocess, data)
        stored = cached_features(net.backbone, task.loader(data, preprocess, extraction, training=False), device,
                                 key, cache, desc=f"features {name}")
        loaders[name] = feature_loader(stored, train.batch_size, shuffle=name == "train")
    return loaders


def _optimizer(groups: list[dict[str, Any]], train: TrainConfig) -> torch.optim.Optimizer:
    """Each group split in two: weights decay, biases and norm parameters (1-D) do not."""
    split = []
    for group in groups:
        decay = [p for p in group["params"] if p.ndim > 1]
        plain = [p for p in group["params"] if p.ndim <= 1]
        rates = {"base_lr": group["lr"], "weight_decay": group.get("weight_decay", train.weight_decay)}
        halves = ({**group, **rates, "params": decay}, {**group, **rates, "params": plain, "weight_decay": 0.0})
        split += [g for g in halves if g["params"]]
    if not split:
        raise TunewiseError("the strategy left no parameter to train.")
    if train.optimizer == "sgd":
        return torch.optim.SGD(split, momentum=0.9, nesterov=True)
    if train.optimizer == "adam":
        return torch.optim.Adam(split)
    return torch.optim.AdamW(split)


def _open_run_dir(run_dir: Path, settings: dict[str, Any], resume: bool) -> Path:
    if resume:
        if not (run_dir / "settings.json").is_file():
            raise TunewiseError(f"nothing to resume in {str(run_dir)!r}: no settings.json. Start "
                                "a new run without --resume.")
        saved = with_task_knobs(json.loads((run_dir / "settings.json").read_text()))
        differ = [k for k in settings if saved.get(k) != settings[k]]
        if differ:
            raise TunewiseError(f"cannot resume {str(run_dir)!r}: its {', '.join(differ)} differ "
                                "from the ones given. Resume with the same settings, or start a new run.")
        return run_dir
    if (run_dir / "settings.json").exists():
        raise TunewiseError(f"run folder {str(run_dir)!r} already holds a run. Pass --resume to "
                            "continue it, or another --out.")
    claim_folder(run_dir)
    write_json(run_dir / "settings.json", settings)
    return run_dir


def _save_checkpoint(run_dir: Path, accelerator: Accelerator, model: nn.Module, optimizer: torch.optim.Optimizer,
                     progress: Progress) -> None:
    """What the next epoch starts from: the weights, the optimizer, where training stands, and the
    fp16 loss scale on GPUs without bf16. Its random state is not here: each epoch draws from
    (seed, epoch) alone (tunewise.epochs)."""
    state = {"model": _unwrap(accelerator, model).state_dict(), "optimizer": optimizer.state_dict(),
             "progress": vars(progress).copy()}
    if accelerator.scaler is not None:
        state["scaler"] = accelerator.scaler.state_dict()
    write_atomic(run_dir / "checkpoint.pt", lambda tmp: torch.save(state, tmp))


def _restore(run_dir: Path, accelerator: Accelerator, model: nn.Module, optimizer: torch.optim.Optimizer) -> Progress:
    state = _read_run_file(run_dir / "checkpoint.pt", "Delete it to restart the run from its first epoch.")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if accelerator.scaler is not None and "scaler" in state:
        accelerator.scaler.load_state_dict(state["scaler"])
    saved = state["progress"]
    if "history" not in saved:  # a checkpoint from before it kept the log: the log's finished epochs
        rows = {row["epoch"]: row for row in read_jsonl(run_dir / "metrics.jsonl") if row["epoch"] < saved["epoch"]}
        saved["history"] = [rows[e] for e in sorted(rows)]
    return Progress(**saved)


def _write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl, one line per finished epoch: rewritten whole (atomically) after each
    checkpoint from the checkpoint's own history, so the two always agree."""
    text = "".join(json.dumps(row, default=str) + "\n" for row in history)
    write_atomic(run_dir / "metrics.jsonl", lambda tmp: Path(tmp).write_text(text))


def _read_run_file(path: Path, fix: str) -> Any:
    """A checkpoint this run wrote, read with weights_only: one a user or a program put in its place
    runs nothing and is refused in one line naming it."""
    return load_tensors(path, RunFolderError, f"tunewise writes it with tensors only, so it was replaced or "
                                              f"damaged. {fix}")


def _probe_compute(run_dir: Path) -> float:
    """What a warm start's probe (LP-FT's, in run_dir/probe) cost, in epoch-equivalents: part of the run's cost."""
    probe = run_dir / "probe" / "record.json"
    return RunRecord.load(probe).compute if probe.is_file() else 0.0


def _probe_head(model: str, data_config: DataConfig, task: Task, train: TrainConfig, strategy: Strategy, run_dir: Path,
                weights: str | Path | None) -> dict[str, torch.Tensor]:
    """Run (or finish) `strategy` in run_dir/probe (LP-FT's probe); its best head's weights."""
    probe_dir = run_dir / "probe"
    if not (probe_dir / "record.json").is_file():
        fit(model, data_config, strategy, task=task, out=probe_dir, weights=weights,
            resume=(probe_dir / "settings.json").is_file(), train=train)
    state: dict[str, torch.Tensor] = _read_run_file(probe_dir / "best.pt",
                                                    f"Delete {str(probe_dir)!r} to run the probe again.")
    if any(k.startswith("head.") for k in state):  # not cached (QA, detection): the whole model was saved
        state = {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
    return state
