"""search(): which strategy and learning rate, and is pretraining worth it here, measured on the
validation set under a budget.

Three tiers on one Optuna study, stored in the run folder (a journal file, or a shared database
for many machines), so a killed search resumes and several workers share it:

1. explore: every strategy on a small log grid of rates, cheapest first (cached-feature probes
   take seconds); successive halving prunes weak arms after a per-strategy grace period, so
   slow starters are not cut at epoch 1. Stops when its share of the budget is spent.
2. final: the best strategies re-run over seeds; the pick is by mean validation metric, with a
   95% interval and the paired difference to the runner-up.
3. scratch: the same architecture from random weights, with its own rates and a longer
   schedule: the answer to "is pretraining worth it here?".

The test split is evaluated once, for the chosen model and the baselines, never to choose.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import re
import secrets
import shutil
import socket
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from tunewise.backbones import load_backbone
from tunewise.config import DataConfig, TrainConfig, raise_if_problems, to_dict, validate_data, validate_train
from tunewise.data import load_data
from tunewise.errors import ConfigError, TunewiseError
from tunewise.export import DENSE_TASKS
from tunewise.inference import evaluate
from tunewise.io import default_run_dir, file_safe, write_atomic, write_json
from tunewise.ranking.ranker import UNRANKED_TASKS
from tunewise.records import Arm, Leaderboard, RunRecord, TrialRecord
from tunewise.registry import did_you_mean
from tunewise.report.search_report import write_report
from tunewise.strategies import STRATEGIES, get_strategy
from tunewise.tasks import get_task

log = logging.getLogger("tunewise")

# Rate ranges per strategy: heads and adapters take larger rates than full fine-tuning.
RATE_RANGES: dict[str, tuple[float, float]] = {
    "linear_probe": (1e-3, 3e-2), "bitfit": (3e-4, 1e-2), "norm_only": (3e-4, 1e-2), "lora": (3e-4, 1e-2),
    "partial": (1e-4, 3e-3), "llrd": (1e-4, 3e-3), "gradual_unfreeze": (1e-4, 3e-3), "full": (3e-5, 1e-3),
    "l2sp": (3e-5, 1e-3), "lp_ft": (1e-5, 3e-4), "scratch": (3e-4, 3e-3),
}
# Detection and segmentation: a frozen backbone's "head" is a whole neck and detector or decoder
# trained from scratch, not one linear layer: rates like a network's. (bench/detection.py: 1e-3 reached
# test mAP 0.51 in 6 epochs; the demo's linear-head middle rate, 5.5e-3, stayed at val mAP 0.006.)
DEEP_HEAD_RATES: dict[str, tuple[float, float]] = {"linear_probe": (3e-4, 3e-3)}
# Cheapest first, so a tight budget still sees every kind of arm.
ORDER = ["linear_probe", "bitfit", "norm_only", "lora", "partial", "llrd", "gradual_unfreeze", "full",
         "l2sp", "lp_ft"]
# Epochs before the pruner may judge an arm: slow starters get longer.
GRACE = {"full": 2, "l2sp": 2, "llrd": 2, "lp_ft": 2, "gradual_unfreeze": 3, "scratch": 3}
TIME_EXPLORE_SHARE = 0.6
"""With a time budget, the share the explore tier may spend; finals and scratch use the rest.
With an epoch budget, the explore tier gets what the finals and the scratch baseline leave."""
CHEAP_TIER_COST = 1 / 3
# With --search-knobs: each strategy's knobs on a small grid around its default (the middle value).
KNOB_GRID: dict[str, list[dict]] = {
    "partial": [{"k": 2}, {"k": 1}, {"k": 4}],
    "gradual_unfreeze": [{"epochs_per_stage": 1}, {"epochs_per_stage": 2}],
    "llrd": [{"decay": 0.75}, {"decay": 0.5}, {"decay": 0.9}],
    "lp_ft": [{"probe_epochs": 10}, {"probe_epochs": 5}],
    "lora": [{"r": 8}, {"r": 4}, {"r": 16}],
    "l2sp": [{"alpha": 0.01}, {"alpha": 0.001}, {"alpha": 0.1}],
}


@dataclass(frozen=True)
class SearchConfig:
    """What a search compares and how much it may spend."""

    strategies: tuple[str, ...] = tuple(ORDER)
    """Candidate strategies (the scratch baseline is separate: `scratch`)."""
    budget: str | None = None
    """Total cost: `Nepochs` (training-epoch equivalents) or a time (`90s`, `30m`, `2h`); None:
    the finals and scratch baseline plus two full runs' worth of exploring."""
    epochs: int = 10
    """Epochs of an explore or final run."""
    rates: int = 3
    """Learning rates tried per strategy, on a log grid over its range."""
    seeds: int = 3
    """Seeds of each finalist (and of the scratch baseline)."""
    finalists: int = 2
    """Strategies re-run over seeds."""
    scratch: bool = True
    """Compare with the same architecture trained from random weights."""
    scratch_epochs: int | None = None
    """Epochs of the scratch baseline; None: twice `epochs` (it starts slower)."""
    workers: int = 1
    """Processes on this machine sharing the study."""
    keep_models: int = 2
    """With several models: how many of the ranking's best go on to fine-tuning."""
    knobs: bool = False
    """Also search each strategy's knobs (LoRA rank, llrd decay, partial's k, ...) on KNOB_GRID;
    off: every strategy at its default knobs."""


def parse_budget(text: str) -> tuple[str, float]:
    """`30epochs` -> ("epochs", 30.0); `90s`, `30m`, `2h` -> ("seconds", ...)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(epochs?|s|m|h)\s*", str(text))
    if not match:
        raise ConfigError(f"--budget {text!r} is not a budget. Use epochs (20epochs) or a time (90s, 30m, 2h).")
    value, unit = float(match.group(1)), match.group(2)
    if unit.startswith("epoch"):
        return "epochs", value
    return "seconds", value * {"s": 1, "m": 60, "h": 3600}[unit]


def validate_search(config: SearchConfig) -> list[str]:
    problems = []
    for name in config.strategies:
        if name not in STRATEGIES or name == "scratch":
            allowed = [s for s in STRATEGIES.names() if s != "scratch"]
            problems.append(f"--strategies has unknown {name!r}.{did_you_mean(name, allowed)} "
                            f"Allowed: all, or some of {', '.join(allowed)}")
    if not config.strategies:
        problems.append("--strategies names no strategy")
    for name in ("epochs", "rates", "seeds", "finalists", "workers", "keep_models"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            problems.append(f"--{name} must be a positive integer, got {value!r}")
    try:
        unit, amount = parse_budget(config.budget)
    except ConfigError as err:
        return [*problems, str(err).rstrip(".")]
    if problems:
        return problems
    if unit == "epochs" and explore_allowance(config) < 1:
        reserved = reserved_cost(config)
        problems.append(f"--budget {config.budget} cannot pay even the cheap tier (one feature pass over the data "
                        f"and a few head epochs) once the finals and the scratch baseline have their "
                        f"{reserved:g} epochs; give at least {reserved + 1:g}epochs, or fewer --seeds or "
                        "--finalists, or --no-scratch")
    return problems


def reserved_cost(config: SearchConfig) -> float:
    """Epochs the final and scratch tiers will train, at most: kept aside from an epoch budget."""
    finals = config.finalists * (config.seeds - 1) * config.epochs
    scratch_epochs = config.scratch_epochs or 2 * config.epochs
    scratch = (2 + config.seeds - 1) * scratch_epochs if config.scratch else 0
    return finals + scratch


def explore_allowance(config: SearchConfig) -> float:
    """What the explore tier may spend, in the budget's unit."""
    unit, amount = parse_budget(config.budget)
    return amount - reserved_cost(config) if unit == "epochs" else TIME_EXPLORE_SHARE * amount


def search(
    model: str | list[str],
    data: str | DataConfig = "textile",
    config: SearchConfig | None = None,
    *,
    train: TrainConfig | None = None,
    out: str | Path | None = None,
    storage: str | None = None,
    resume: bool = False,
    weights: str | None = None,
    task: str = "image_classification",
    **overrides,
) -> Leaderboard:
    """Search strategy x learning rate on the validation set under a budget; pick over seeds.

    Args:
        model: the backbone (`pkg:efficientnet_lite0`, `timm:resnet50`), or several: they are
            ranked first from their cached features (the cheapest tier), and the best
            `config.keep_models` are searched model x strategy x rate.
        data: a data set name or image folder, or a DataConfig.
        config: what to compare and the budget; keyword arguments override fields (`seeds=1`).
        train: settings every run shares (batch size, optimizer, ...); rate, seed and epochs
            are the search's.
        out: the run folder; default runs/search-<time>-<model>.
        storage: an Optuna storage URL shared by workers on many machines
            (postgresql://user:pw@host/db); default: a journal file in the run folder.
        resume: continue the search in `out` with its own settings (model and data must be the
            same); finished trials are kept, none is repeated.
        task: a registered task (`text_classification`, ...); its metric selects.

    Returns:
        The Leaderboard, also written to `out/leaderboard.json` (and .csv).
    """
    config = replace(config or SearchConfig(), **overrides)
    if isinstance(config.strategies, str):
        config = replace(config, strategies=_strategy_list(config.strategies))
    models = [model] if isinstance(model, str) else list(dict.fromkeys(model))
    model = models[0]
    if config.budget is None:
        searched = min(len(models), config.keep_models)
        config = replace(config, budget=f"{reserved_cost(config) + 2 * config.epochs * searched:g}epochs")
    train = train or TrainConfig()
    data_config = data if isinstance(data, DataConfig) else DataConfig(data=data)
    raise_if_problems(validate_search(config) + validate_train(train) + validate_data(data_config))
    metric = get_task(task).metric  # an unknown task fails here, before anything is written
    if len(models) > 1 and task in UNRANKED_TASKS:  # refused before the run folder exists
        raise ConfigError(f"--models ranks the candidates first, and ranking scores classification only, not "
                          f"{task}. Search one --model at a time and compare the leaderboards.")
    has_test = load_data(data_config, task).test is not None  # fail on bad data, model or storage first
    if len(models) == 1:  # several are loaded by the ranking, which reports the ones that fail
        load_backbone(model, weights=weights)
    elif weights:
        raise ConfigError("--weights belongs to one model; with several models, pass each as a file path instead.")
    if storage:
        connect(storage)
    if data_parallel():
        if config.workers > 1:
            raise ConfigError("--workers runs its own processes; under accelerate launch or torchrun each trial "
                              "is already data-parallel. Pass --workers 1.")
        if os.environ.get("RANK", "0") != "0":  # rank 0 talks to Optuna; the others train what it sends
            return follow()
    settings = {"model": model, "models": models, "weights": weights, "task": task, "data": to_dict(data_config),
                "train": to_dict(train), "search": asdict(config), "storage": storage}
    run_dir = _open_search_dir(out, model, settings, resume)
    study = open_study(run_dir)
    if resume:  # the search goes on as it was started
        saved = json.loads((run_dir / "settings.json").read_text())
        config = SearchConfig(**{**saved["search"], "strategies": tuple(saved["search"]["strategies"])})
        requeue_interrupted(study)
    started = time.perf_counter()
    kept = _kept_models(run_dir, models, data_config, task, config, train)

    if not _trials(study, "explore"):
        _enqueue_explore(study, config, kept, task)
    drain(run_dir, study, config.workers)
    if not _trials(study, "final"):
        _enqueue_finals(study, config)
    if config.scratch and not _trials(study, "scratch"):
        _enqueue_scratch(study, config, seeds=False)
    drain(run_dir, study, config.workers)
    if config.scratch and not _trials(study, "scratch", seeds=True):
        _enqueue_scratch(study, config, seeds=True)
        drain(run_dir, study, config.workers)

    board = decide(study, run_dir, kept[0], data_config, config, time.perf_counter() - started, has_test, metric)
    board.save(run_dir / "leaderboard.json")
    write_atomic(run_dir / "leaderboard.csv", lambda tmp: Path(tmp).write_text(board.csv()))
    if task in DENSE_TASKS:  # boxes and masks are judged by eye too: the report shows the winner's
        from tunewise.dense_predict import draw_examples

        draw_examples(run_dir / "model", data_config, run_dir / "predictions.png")
    write_report(board, run_dir)
    if data_parallel():
        _broadcast({"done": str(run_dir)})
    return board


def _kept_models(run_dir: Path, models: list[str], data: DataConfig, task: str, config: SearchConfig,
                 train: TrainConfig) -> list[str]:
    """The models the search fine-tunes: the one given, or the best `keep_models` of a ranking
    of several (the cheapest tier: one feature pass each). Recorded in settings.json, so a
    resumed search and every worker fine-tune the same ones; the scratch baseline takes the
    first one's architecture."""
    settings = json.loads((run_dir / "settings.json").read_text())
    if "kept" in settings:
        return settings["kept"]
    kept = models
    if len(models) > 1:
        from tunewise.ranking.ranker import rank

        ranking = rank(models, data, task=task, out=run_dir / "ranking", train=train)
        kept = [c.model for c in ranking.candidates if c.error is None][:config.keep_models]
        log.info("ranking kept %s for fine-tuning (of %s)", ", ".join(kept), ", ".join(models))
    write_json(run_dir / "settings.json", {**settings, "kept": kept})
    return kept


def _strategy_list(text: str) -> tuple[str, ...]:
    return tuple(ORDER) if text == "all" else tuple(s.strip() for s in text.split(",") if s.strip())


# --- the study -----------------------------------------------------------------------------------

def open_study(run_dir: Path) -> optuna.Study:
    """The search's study: in the database its settings name, or in run_dir/study.journal."""
    settings = json.loads((run_dir / "settings.json").read_text())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=settings["study"], storage=connect(settings["storage"], run_dir),
                               direction="maximize", load_if_exists=True, pruner=GracePruner())


def connect(storage: str | None, run_dir: Path | None = None) -> optuna.storages.BaseStorage:
    """A database storage (checked by connecting), or the journal file in `run_dir`."""
    if storage:
        try:
            return optuna.storages.RDBStorage(storage, engine_kwargs={"pool_pre_ping": True})
        except Exception as err:  # the driver's own error types vary: report any, start nothing
            raise TunewiseError(f"cannot reach the study storage {storage!r}: {err}. Check the URL, that the "
                                "server runs and that its driver is installed (PostgreSQL: pip install "
                                "'tunewise[postgres]').") from None
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(run_dir / "study.journal")))


class GracePruner(optuna.pruners.BasePruner):
    """Successive halving (keep the top third at each rung) after a per-strategy grace period;
    only explore trials are ever pruned."""

    def __init__(self) -> None:
        self.base = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if trial.user_attrs.get("tier") != "explore" or step is None:
            return False
        if step + 1 < GRACE.get(trial.params.get("strategy", ""), 1):
            return False
        return self.base.prune(study, trial)


def _trials(study: optuna.Study, tier: str, seeds: bool | None = None) -> list[optuna.trial.FrozenTrial]:
    found = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("tier") == tier]
    if seeds is not None:
        found = [t for t in found if t.user_attrs.get("seeded", False) == seeds]
    return found


def _rates(strategy: str, count: int, task: str = "image_classification") -> list[float]:
    """`count` rates log-spaced over the strategy's range, the middle one first."""
    low, high = (DEEP_HEAD_RATES if task in DENSE_TASKS else {}).get(strategy, RATE_RANGES[strategy])
    grid = np.geomspace(low, high, count).tolist() if count > 1 else [math.sqrt(low * high)]
    middle = len(grid) // 2
    return [float(f"{r:.3g}") for r in [grid[middle], *grid[:middle], *grid[middle + 1:]]]


def _enqueue_explore(study: optuna.Study, config: SearchConfig, models: list[str], task: str) -> None:
    ordered = [s for s in ORDER if s in config.strategies]
    grid = {s: _rates(s, config.rates, task) for s in ordered}
    variants = {s: KNOB_GRID.get(s, [{}]) if config.knobs else [{}] for s in ordered}
    for index in range(config.rates):  # every strategy at its first rate before any second rate
        for strategy in ordered:
            for knobs in variants[strategy]:
                for model in models:
                    study.enqueue_trial({"strategy": strategy, "lr": grid[strategy][index]},
                                        user_attrs={"tier": "explore", "seed": 0, "epochs": config.epochs,
                                                    "knobs": knobs, "model": model if len(models) > 1 else None})


def _enqueue_finals(study: optuna.Study, config: SearchConfig) -> None:
    for best in _finalists(study, config.finalists):
        for seed in range(1, config.seeds):  # seed 0 is the explore run itself
            study.enqueue_trial(dict(best.params), user_attrs={"tier": "final", "seed": seed,
                                                               "epochs": config.epochs, "of": best.number,
                                                               "knobs": best.user_attrs.get("knobs", {}),
                                                               "model": best.user_attrs.get("model")})


def _finalists(study: optuna.Study, count: int) -> list[optuna.trial.FrozenTrial]:
    """The best completed explore trial of each strategy (on each model), best first."""
    best: dict[tuple, optuna.trial.FrozenTrial] = {}
    for t in _trials(study, "explore"):
        if t.state == TrialState.COMPLETE:
            s = (t.params["strategy"], t.user_attrs.get("model"))
            if s not in best or t.value > best[s].value:
                best[s] = t
    return sorted(best.values(), key=lambda t: -t.value)[:count]


def _enqueue_scratch(study: optuna.Study, config: SearchConfig, seeds: bool) -> None:
    epochs = config.scratch_epochs or 2 * config.epochs
    if not seeds:
        for lr in _rates("scratch", 2):
            study.enqueue_trial({"strategy": "scratch", "lr": lr},
                                user_attrs={"tier": "scratch", "seed": 0, "epochs": epochs, "seeded": False})
        return
    done = [t for t in _trials(study, "scratch", seeds=False) if t.state == TrialState.COMPLETE]
    if done:
        best = max(done, key=lambda t: t.value)
        for seed in range(1, config.seeds):
            study.enqueue_trial(dict(best.params), user_attrs={"tier": "scratch", "seed": seed, "epochs": epochs,
                                                               "seeded": True, "of": best.number})


# --- running trials ----------------------------------------------------------------------------

def drain(run_dir: Path, study: optuna.Study, workers: int) -> None:
    """Run every waiting trial, in this process and `workers - 1` more sharing the study."""
    context = multiprocessing.get_context("spawn")
    helpers = [context.Process(target=work, args=(str(run_dir),)) for _ in range(workers - 1)]
    for helper in helpers:
        helper.start()
    work(str(run_dir), study)
    for helper in helpers:
        helper.join()


def work(run_dir: str, study: optuna.Study | None = None) -> int:
    """Take waiting trials one at a time until none is left; past the explore tier's share of
    the budget, its waiting trials are closed as failed with the reason. Returns how many ran."""
    folder = Path(run_dir)
    settings = json.loads((folder / "settings.json").read_text())
    study = study or open_study(folder)
    config = SearchConfig(**settings["search"])
    unit, allowance = parse_budget(config.budget)[0], explore_allowance(config)
    ran = 0
    while any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False)):
        trial = study.ask()
        if "tier" not in trial.user_attrs:  # another worker took the last waiting trial first
            trial.set_user_attr("tier", "none")
            study.tell(trial, state=TrialState.FAIL)
            break
        strategy = trial.suggest_categorical("strategy", [*ORDER, "scratch"])
        lr = trial.suggest_float("lr", 1e-12, 1e6, log=True)  # wide: enqueued rates are fixed
        cacheable = get_task(settings.get("task", "image_classification")).cacheable
        if trial.user_attrs["tier"] == "explore" and _spent(study, unit) + _cost(strategy, config, unit,
                                                                                 cacheable) > allowance:
            trial.set_user_attr("skipped", f"not run: it would not fit in what is left of the explore tier's "
                                           f"part of the budget ({allowance:g} of {config.budget})")
            study.tell(trial, state=TrialState.FAIL)
            continue
        _run_trial(study, trial, strategy, lr, folder, settings)
        ran += 1
    return ran


def serve(run_dir: str | Path, poll_seconds: float = 2.0) -> int:
    """A worker on another machine: run the waiting trials of the search in `run_dir` (a shared
    folder; its settings.json names the storage) until the coordinator has written its
    leaderboard. Returns the number of trials this worker ran."""
    folder = Path(run_dir)
    if not (folder / "settings.json").is_file():
        raise TunewiseError(f"{str(folder)!r} holds no search (no settings.json). Start the search there first "
                            "with --storage, then workers with the same --out and --storage.")
    study = open_study(folder)
    mine = 0
    while not (folder / "leaderboard.json").is_file():
        mine += work(str(folder), study)
        time.sleep(poll_seconds)
    return mine


def requeue_interrupted(study: optuna.Study) -> int:
    """Trials left running by a killed search: closed as failed and queued again (their run
    folder is reused, so the new trial resumes from the last finished epoch)."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        study.enqueue_trial(dict(t.params), user_attrs={**t.user_attrs, "requeued_from": t.number})
        study.tell(t.number, state=TrialState.FAIL)
    return len(stale)


def _cost(strategy: str, config: SearchConfig, unit: str, cacheable: bool = True) -> float:
    """The most an explore trial can cost, so that an epoch budget is never overrun; a linear
    probe is cheap only where its features are cached (not QA, detection, segmentation)."""
    if unit != "epochs":
        return 0.0  # a time budget is checked against the time spent so far
    return CHEAP_TIER_COST if strategy == "linear_probe" and cacheable else float(config.epochs)


def _spent(study: optuna.Study, unit: str) -> float:
    key = "compute" if unit == "epochs" else "seconds"
    return sum(t.user_attrs.get(key, 0.0) for t in study.get_trials(deepcopy=False))


def _run_trial(study: optuna.Study, trial: optuna.Trial, strategy: str, lr: float, folder: Path,
               settings: dict) -> None:

    attrs = trial.user_attrs
    train = replace(TrainConfig(**settings["train"]), lr=lr, seed=attrs["seed"], epochs=attrs["epochs"],
                    patience=None)
    knobs, model = attrs.get("knobs", {}), attrs.get("model") or settings.get("kept", [settings["model"]])[0]
    # named by what it runs, not by trial number: a requeued trial resumes in the same folder
    variant = "".join(f"-{k}{v}" for k, v in sorted(knobs.items()))
    on = f"{file_safe(model)}-" if len(settings.get("kept", [])) > 1 else ""
    out = folder / "trials" / f"{attrs['tier']}-{on}{strategy}{variant}-lr{lr:.3g}-seed{attrs['seed']}"

    def should_stop(epoch: int, score: float) -> bool:
        trial.report(score, epoch)
        if epoch + 1 < attrs["epochs"] and trial.should_prune():  # a finished run is not pruned
            trial.set_user_attr("reason", f"pruned after epoch {epoch + 1}: validation {score:.4f} not in the "
                                          f"top third of its rung")
            return True
        return False

    run = {"model": model, "data": settings["data"], "strategy": strategy, "knobs": knobs,
           "train": asdict(train),
           "out": str(out), "task": settings.get("task", "image_classification"), "weights": settings["weights"],
           "resume": out.exists()}
    if data_parallel():
        _broadcast(run)  # the other ranks train the same trial, data-parallel
    try:
        record = _fit_trial(run, should_stop)
    except (TunewiseError, RuntimeError) as err:  # a NaN loss, a shape error: this arm fails, the search goes on
        trial.set_user_attr("reason", str(err))
        study.tell(trial, state=TrialState.FAIL)
        return
    trial.set_user_attr("run_dir", record.run_dir)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    trial.set_user_attr("compute", record.compute)
    trial.set_user_attr("seconds", record.seconds)
    if record.stopped == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, record.val_score)


def _fit_trial(run: dict, should_stop) -> RunRecord:
    from tunewise.train import fit

    strategy = get_strategy(run["strategy"], **run["knobs"])
    return fit(run["model"], DataConfig(**run["data"]), strategy, train=TrainConfig(**run["train"]),
               out=run["out"], task=run["task"], weights=run["weights"], test=False, should_stop=should_stop,
               resume=run["resume"])


# --- data-parallel trials (accelerate launch, torchrun) -----------------------------------------

def data_parallel() -> bool:
    """Whether this process is one of several ranks (accelerate launch and torchrun set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _broadcast(message: dict | None) -> dict | None:
    """Rank 0's message, on every rank."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    PartialState(cpu=not torch.cuda.is_available())  # joins the process group once
    return broadcast_object_list([message])[0]


def follow() -> Leaderboard:
    """A rank other than 0: train each trial rank 0 sends until it sends the finished search.
    Pruning verdicts come from rank 0 inside fit(); this rank never opens the study."""
    while "done" not in (run := _broadcast(None)):
        try:
            _fit_trial(run, should_stop=lambda epoch, score: False)
        except (TunewiseError, RuntimeError):  # rank 0 meets the same error and records it
            continue
    return Leaderboard.load(Path(run["done"]) / "leaderboard.json")


# --- deciding ----------------------------------------------------------------------------------

def interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and its 95% t-interval; a single value has an interval of zero width (no spread known)."""
    from scipy import stats

    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def decide(study, run_dir: Path, model: str, data: DataConfig, config: SearchConfig, seconds: float,
           has_test: bool, metric: str) -> Leaderboard:
    """Arms from seeded runs, the pick by mean, paired differences, one test evaluation each."""
    trials = [_trial_record(t) for t in study.get_trials(deepcopy=False) if t.user_attrs.get("tier") != "none"]
    arms = []
    for best in _finalists(study, config.finalists):
        runs = [best, *[t for t in _trials(study, "final") if t.user_attrs.get("of") == best.number]]
        arms.append(_arm(best.params["strategy"], best.params["lr"], runs))
    scratch_runs = [t for t in _trials(study, "scratch") if t.state == TrialState.COMPLETE]
    if scratch_runs:
        best = max((t for t in scratch_runs if not t.user_attrs.get("seeded")), key=lambda t: t.value)
        arms.append(_arm("scratch", best.params["lr"], [best, *[t for t in scratch_runs if
                                                                 t.user_attrs.get("of") == best.number]]))
    if not arms:
        raise TunewiseError(f"no trial of the search in {str(run_dir)!r} completed; see leaderboard.csv "
                            "for each trial's reason, and give a larger --budget.")
    arms.sort(key=lambda a: -a.mean)
    winner = arms[0]
    pretrained = next((a for a in arms if a.strategy != "scratch"), None)
    scratch = next((a for a in arms if a.strategy == "scratch"), None)
    probe = max((t for t in trials if t.strategy == "linear_probe" and t.state == "complete"),
                key=lambda t: t.val or 0, default=None)
    probe_arm = next((a for a in arms if a.strategy == "linear_probe"), None)
    for arm in {id(a): a for a in (winner, pretrained, scratch, probe_arm) if a is not None}.values():
        if has_test:
            arm.test = evaluate(arm.run_dirs[0], data, split="test")
    board = Leaderboard(
        run_dir=str(run_dir), model=model, data=data.data, metric=metric, budget=config.budget,
        trials=trials, arms=arms, winner=winner.name,
        runner_up=_paired(winner, arms[1]) if len(arms) > 1 else None,
        versus_scratch=_paired(pretrained, scratch) if pretrained and scratch else None,
        linear_probe_test=evaluate(probe.run_dir, data, split="test") if probe and has_test else None,
        compute=round(sum(t.compute for t in trials), 3), seconds=round(seconds, 1),
    )
    _export_winner(winner, run_dir)
    return board


def _arm(strategy: str, lr: float, runs: list) -> Arm:
    runs = sorted((t for t in runs if t.state == TrialState.COMPLETE), key=lambda t: t.user_attrs["seed"])
    scores = [t.value for t in runs]
    mean, low, high = interval(scores)
    return Arm(strategy=strategy, lr=lr, seeds=[t.user_attrs["seed"] for t in runs], scores=scores, mean=mean,
               ci_low=low, ci_high=high, run_dirs=[t.user_attrs["run_dir"] for t in runs],
               knobs=runs[0].user_attrs.get("knobs", {}) if runs else {},
               model=runs[0].user_attrs.get("model") if runs else None)


def _paired(a: Arm, b: Arm) -> dict:
    """a - b over the seeds both ran: the mean difference and its 95% interval."""
    common = sorted(set(a.seeds) & set(b.seeds))
    diffs = [a.scores[a.seeds.index(s)] - b.scores[b.seeds.index(s)] for s in common]
    mean, low, high = interval(diffs) if diffs else (a.mean - b.mean, math.nan, math.nan)
    return {"versus": b.name, "seeds": common, "mean": mean, "ci_low": low, "ci_high": high}


def _trial_record(t: optuna.trial.FrozenTrial) -> TrialRecord:
    run_dir = t.user_attrs.get("run_dir")
    record = RunRecord.load(Path(run_dir) / "record.json") if run_dir else None
    return TrialRecord(
        number=t.number, tier=t.user_attrs.get("tier", "?"), strategy=t.params.get("strategy", "?"),
        lr=t.params.get("lr", math.nan), seed=t.user_attrs.get("seed", 0),
        state="skipped" if "skipped" in t.user_attrs else t.state.name.lower(),
        reason=t.user_attrs.get("skipped") or t.user_attrs.get("reason")
        or ("interrupted; queued again" if t.state == TrialState.FAIL else None),
        epochs_run=record.epochs_run if record else 0,
        compute=t.user_attrs.get("compute", 0.0), seconds=t.user_attrs.get("seconds", 0.0),
        val=max(record.curve) if record and record.curve else None,
        curve=record.curve if record else [], run_dir=run_dir,
        trainable_params=record.trainable_params if record else 0, knobs=t.user_attrs.get("knobs", {}),
        model=t.user_attrs.get("model"),
    )


RUN_STATE = {"checkpoint.pt", "best.pt", "metrics.jsonl", "settings.json"}


def _export_winner(winner: Arm, run_dir: Path) -> None:
    """The winner's seed-0 model in run_dir/model, and best.yaml that `tunewise fit --config` reruns."""
    import yaml

    source = Path(winner.run_dirs[0])
    (run_dir / "model").mkdir(exist_ok=True)
    for file in source.iterdir():  # the export: weights, model.json and, for text, config and tokenizer
        if file.is_file() and file.name not in RUN_STATE:
            shutil.copyfile(file, run_dir / "model" / file.name)
    settings = json.loads((source / "settings.json").read_text())
    best = {"model": settings["model"], "weights": settings["weights"],
            "task": settings.get("task", "image_classification"),
            "strategy": settings["strategy"],
            "knobs": settings["knobs"], "data": settings["data"], "train": settings["train"]}
    text = f"# Reproduce the search's winner: tunewise fit --config {run_dir / 'best.yaml'}\n" + yaml.safe_dump(best)
    write_atomic(run_dir / "best.yaml", lambda tmp: Path(tmp).write_text(text))


def _open_search_dir(out, model: str, settings: dict, resume: bool) -> Path:
    run_dir = Path(out) if out is not None else default_run_dir(model, prefix="search-")
    saved_path = run_dir / "settings.json"
    if resume:
        if not saved_path.is_file():
            raise TunewiseError(f"nothing to resume in {str(run_dir)!r}: no settings.json. Start a new search "
                                "without --resume.")
        saved = json.loads(saved_path.read_text())
        saved.setdefault("models", [saved.get("model")])  # a search from before --models
        differ = [k for k in ("models", "weights", "data") if saved.get(k) != settings[k]]
        if differ:
            detail = "; ".join(f"{k}: {saved.get(k)!r} there, {settings[k]!r} given" for k in differ)
            raise TunewiseError(f"cannot resume {str(run_dir)!r} with another {', '.join(differ)} ({detail}). "
                                "Resume with the same model and data, or start a new search.")
        return run_dir
    if saved_path.exists():
        raise TunewiseError(f"{str(run_dir)!r} already holds a search. Pass --resume to continue it, or another "
                            "--out.")
    run_dir.mkdir(parents=True, exist_ok=True)
    # unique in a shared database, where many searches (and old ones) keep their studies
    write_json(saved_path, {**settings, "study": f"{run_dir.name}-{secrets.token_hex(4)}"})
    return run_dir
