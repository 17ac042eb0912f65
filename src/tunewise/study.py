"""search(): which strategy and learning rate, and is pretraining worth it here, measured on the
validation set under a budget.

Three tiers on one Optuna study, stored in the run folder (a journal file, or a shared database
for many machines), so a killed search resumes and several workers share it:

1. explore: every strategy on a small log grid of rates, cheapest first (cached-feature probes
   take seconds); successive halving prunes weak arms after a per-strategy grace period, so
   slow starters are not cut at epoch 1. Stops when its share of the budget is spent.
2. final: the best two strategies re-run over seeds (a pruned one in full, so the finals compare
   strategies whenever two were measured); intervals resample seeds and validation examples
   (tunewise.stats), and the pick is the cheapest arm that cannot be told apart from the best.
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState
from tqdm.auto import tqdm

from tunewise.backbones import load_backbone
from tunewise.config import (
    BASELINE_STRATEGY,
    DEFAULT_TASK,
    DataConfig,
    TrainConfig,
    raise_if_problems,
    to_dict,
    validate_data,
    validate_train,
)
from tunewise.data import load_data
from tunewise.errors import ConfigError, TunewiseError
from tunewise.inference import evaluate
from tunewise.io import default_run_dir, file_safe, write_atomic, write_json
from tunewise.records import Arm, Leaderboard, RunRecord, TrialRecord
from tunewise.registry import did_you_mean
from tunewise.report.search_report import write_report
from tunewise.stats import detectable_difference, difference_interval, mean_interval, verdict
from tunewise.strategies import STRATEGIES, default_strategies, get_strategy, in_search_order
from tunewise.tasks import get_task
from tunewise.train import EXAMPLE_STATS, selection_metric

log = logging.getLogger("tunewise")

TIME_EXPLORE_SHARE = 0.6
"""With a time budget, the share the explore tier may spend; finals and scratch use the rest.
With an epoch budget, the explore tier gets what the finals and the scratch baseline leave."""
CHEAP_TIER_COST = 1 / 3
BASELINE_TIER = BASELINE_STRATEGY
"""The tier of the from-scratch baseline's runs (named after what it trains)."""


@dataclass(frozen=True)
class SearchConfig:
    """What a search compares and how much it may spend."""

    strategies: tuple[str, ...] = field(default_factory=default_strategies)
    """Candidate strategies (the scratch baseline is separate: `scratch`)."""
    budget: str | None = None
    """Total cost: `Nepochs` (training-epoch equivalents) or a time (`90s`, `30m`, `2h`); None:
    the finals and the scratch baseline, plus every strategy in full at its middle rate and through
    its grace epochs at its other rates, so every strategy is measured (`default_budget`); a smaller
    budget warns which strategies it cannot measure."""
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
    """Also search each strategy's knobs (LoRA rank, llrd decay, partial's k, ...) on its `knob_grid`;
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
        if name not in STRATEGIES or not STRATEGIES.get(name).pretrained:
            allowed = [s for s in STRATEGIES.names() if STRATEGIES.get(s).pretrained]
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
    if unit == "epochs" and explore_allowance(config) < CHEAP_TIER_COST - 1e-9:
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


def default_budget(config: SearchConfig, models: int = 1, cacheable: bool = True, augments: bool = False) -> str:
    """The finals and the scratch baseline, plus, on each searched model, every strategy for its
    whole schedule at its middle rate and through its grace rung at its other rates (where the
    pruner judges it), plus one run without augmentation where the task augments: every strategy
    is measured, and every rate is seen."""
    explore = sum(_full_cost(s, config, cacheable) + (config.rates - 1) * _least_cost(s, config, cacheable)
                  for s in config.strategies)
    extra = config.epochs if augments else 0
    return f"{math.ceil(reserved_cost(config) + models * explore + extra - 1e-9):g}epochs"


def unmeasurable(config: SearchConfig, models: int = 1, cacheable: bool = True) -> list[str]:
    """The strategies an epoch budget cannot take even through their grace rung at their middle
    rate, cheapest first, after the finals and the scratch baseline have their share."""
    unit, _ = parse_budget(config.budget)
    if unit != "epochs":
        return []
    left, dropped = explore_allowance(config), []
    for strategy in in_search_order(config.strategies):
        need = models * _least_cost(strategy, config, cacheable)
        if need > left + 1e-9:
            dropped.append(strategy)
        else:
            left -= need
    return dropped


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
    task: str = DEFAULT_TASK,
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
    the_task = get_task(task)  # an unknown task fails here, before anything is written
    searched = min(len(models), config.keep_models)
    if config.budget is None:
        config = replace(config, budget=default_budget(config, searched, the_task.cacheable,
                                                       the_task.augments))
    train = train or TrainConfig()
    data_config = data if isinstance(data, DataConfig) else DataConfig(data=data)
    raise_if_problems(validate_search(config) + validate_train(train) + validate_data(data_config))
    if len(models) > 1 and not the_task.rankable:  # refused before the run folder exists
        raise ConfigError(f"--models ranks the candidates first, and ranking scores classification only, not "
                          f"{task}. Search one --model at a time and compare the leaderboards.")
    splits = load_data(data_config, task)  # fail on bad data, model or storage first
    has_test = splits.test is not None
    metric, metric_reason = selection_metric(the_task, splits, train.metric)
    train = replace(train, metric=metric)  # every trial selects on the same metric
    _warn_before(config, searched, the_task.cacheable, metric_reason)
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
    if the_task.augments and not any("augment" in t.user_attrs for t in _trials(study, "explore")):
        _enqueue_no_augment(study, config, json.loads((run_dir / "settings.json").read_text()))
        drain(run_dir, study, config.workers)
    if not _trials(study, "final"):
        _enqueue_finals(study, config)
    if config.scratch and not _trials(study, BASELINE_TIER):
        _enqueue_scratch(study, config, seeds=False)
    drain(run_dir, study, config.workers)
    if config.scratch and not _trials(study, BASELINE_TIER, seeds=True):
        _enqueue_scratch(study, config, seeds=True)
        drain(run_dir, study, config.workers)

    board = decide(study, run_dir, kept[0], data_config, config, time.perf_counter() - started, has_test,
                   get_task(task), metric, metric_reason)
    board.save(run_dir / "leaderboard.json")
    write_atomic(run_dir / "leaderboard.csv", lambda tmp: Path(tmp).write_text(board.csv()))
    if the_task.dense:  # boxes and masks are judged by eye too: the report shows the winner's
        from tunewise.dense_predict import draw_examples

        draw_examples(run_dir / "model", data_config, run_dir / "predictions.png")
    write_report(board, run_dir)
    if data_parallel():
        _broadcast({"done": str(run_dir)})
    return board


def _warn_before(config: SearchConfig, models: int, cacheable: bool, metric_reason: str) -> None:
    """What the user should know before the search spends anything."""
    log.info("selecting on %s", metric_reason)
    if config.seeds < 3:
        log.warning("--seeds %d: the finals measure the variation between seeds with %s; intervals will be wide "
                    "and a single seed is never called significant. 3 is the default.", config.seeds,
                    "one seed, so not at all" if config.seeds == 1 else "two seeds, barely")
    dropped = unmeasurable(config, models, cacheable)
    if dropped:
        log.warning("--budget %s leaves no room to measure %s (even through the grace epochs at the middle rate); "
                    "they will be reported as not measured. Without --budget every strategy is measured.",
                    config.budget, ", ".join(dropped))


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
        from tunewise.choose import rank

        ranking = rank(models, data, task=task, out=run_dir / "ranking", train=train)
        kept = [c.model for c in ranking.candidates if c.error is None][:config.keep_models]
        log.info("ranking kept %s for fine-tuning (of %s)", ", ".join(kept), ", ".join(models))
    write_json(run_dir / "settings.json", {**settings, "kept": kept})
    return kept


def _strategy_list(text: str) -> tuple[str, ...]:
    return default_strategies() if text == "all" else tuple(s.strip() for s in text.split(",") if s.strip())


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
        if step + 1 < _grace(trial.params.get("strategy", "")):
            return False
        return self.base.prune(study, trial)


def _trials(study: optuna.Study, tier: str, seeds: bool | None = None) -> list[optuna.trial.FrozenTrial]:
    found = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("tier") == tier]
    if seeds is not None:
        found = [t for t in found if t.user_attrs.get("seeded", False) == seeds]
    return found


def strategy_choices() -> list[str]:
    """Every strategy a trial may run (its Optuna categorical): the registered ones, by name."""
    return STRATEGIES.names()


def _head_only(strategy: str) -> bool:
    return strategy in STRATEGIES and STRATEGIES.get(strategy).head_only


def _grace(strategy: str) -> int:
    return STRATEGIES.get(strategy).grace_epochs if strategy in STRATEGIES else 1


def _rates(strategy: str, count: int, task: str = DEFAULT_TASK) -> list[float]:
    """`count` rates log-spaced over the strategy's range, the middle one first."""
    return STRATEGIES.get(strategy).rates(count, deep_head=get_task(task).dense)


def _enqueue_explore(study: optuna.Study, config: SearchConfig, models: list[str], task: str) -> None:
    ordered = in_search_order(config.strategies)
    grid = {s: _rates(s, config.rates, task) for s in ordered}
    variants = {s: list(STRATEGIES.get(s).knob_grid or [{}]) if config.knobs else [{}] for s in ordered}
    for index in range(config.rates):  # every strategy at its first rate before any second rate
        for strategy in ordered:
            for knobs in variants[strategy]:
                for model in models:
                    study.enqueue_trial({"strategy": strategy, "lr": grid[strategy][index]},
                                        user_attrs={"tier": "explore", "seed": 0, "epochs": config.epochs,
                                                    "knobs": knobs, "model": model if len(models) > 1 else None})


def _enqueue_finals(study: optuna.Study, config: SearchConfig) -> None:
    for best in _finalists(study, config.finalists):
        first = 1 if best.state == TrialState.COMPLETE else 0  # a complete explore run is its arm's seed 0
        for seed in range(first, config.seeds):
            study.enqueue_trial(dict(best.params), user_attrs={
                "tier": "final", "seed": seed, "epochs": config.epochs, "of": best.number,
                **{k: best.user_attrs[k] for k in ("knobs", "model", "augment") if k in best.user_attrs}})


def _enqueue_no_augment(study: optuna.Study, config: SearchConfig, settings: dict) -> None:
    """The best explore run that trained its backbone, once more without augmentation: flips and
    crops can destroy labels (mirrored digits, text in images), and only a measurement tells."""
    trained = [t for t in _trials(study, "explore") if t.state == TrialState.COMPLETE
               and not (_head_only(t.params["strategy"]) and get_task(settings["task"]).cacheable)]
    if trained and TrainConfig(**settings["train"]).augment:
        best = max(trained, key=lambda t: t.value)
        attrs = {k: best.user_attrs[k] for k in ("tier", "seed", "epochs", "knobs", "model") if k in best.user_attrs}
        study.enqueue_trial(dict(best.params), user_attrs={**attrs, "augment": False, "of": best.number})


def _finalists(study: optuna.Study, count: int) -> list[optuna.trial.FrozenTrial]:
    """The best explore trial of each strategy (on each model), best first.

    Completed trials first. When fewer than `count` strategies completed, the best pruned or
    budget-stopped trials of the others fill the places (the finals then run them in full over
    every seed), so the finals compare strategies whenever two were measured: scratch is the
    baseline, never the runner-up.
    """
    complete: dict[tuple, optuna.trial.FrozenTrial] = {}
    partial: dict[tuple, optuna.trial.FrozenTrial] = {}
    for t in _trials(study, "explore"):
        key = (t.params["strategy"], t.user_attrs.get("model"))
        if t.state == TrialState.COMPLETE and (key not in complete or t.value > complete[key].value):
            complete[key] = t
        elif t.state == TrialState.PRUNED and t.intermediate_values and (
                key not in partial or _best_seen(t) > _best_seen(partial[key])):
            partial[key] = t
    chosen = sorted(complete.values(), key=lambda t: -t.value)[:count]
    fill = sorted((t for k, t in partial.items() if k not in complete), key=lambda t: -_best_seen(t))
    return chosen + fill[:count - len(chosen)]


def _best_seen(trial: optuna.trial.FrozenTrial) -> float:
    return max(trial.intermediate_values.values())


def _enqueue_scratch(study: optuna.Study, config: SearchConfig, seeds: bool) -> None:
    epochs = config.scratch_epochs or 2 * config.epochs
    if not seeds:
        for lr in _rates(BASELINE_STRATEGY, 2):
            study.enqueue_trial({"strategy": BASELINE_STRATEGY, "lr": lr},
                                user_attrs={"tier": BASELINE_TIER, "seed": 0, "epochs": epochs, "seeded": False})
        return
    done = [t for t in _trials(study, BASELINE_TIER, seeds=False) if t.state == TrialState.COMPLETE]
    if done:
        best = max(done, key=lambda t: t.value)
        for seed in range(1, config.seeds):
            study.enqueue_trial(dict(best.params), user_attrs={"tier": BASELINE_TIER, "seed": seed, "epochs": epochs,
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
    cacheable = get_task(settings.get("task", DEFAULT_TASK)).cacheable
    ran = 0
    while any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False)):
        trial = study.ask()
        if "tier" not in trial.user_attrs:  # another worker took the last waiting trial first
            trial.set_user_attr("tier", "none")
            study.tell(trial, state=TrialState.FAIL)
            break
        strategy = trial.suggest_categorical("strategy", strategy_choices())
        lr = trial.suggest_float("lr", 1e-12, 1e6, log=True)  # wide: enqueued rates are fixed
        least = _least_cost(strategy, config, cacheable) if unit == "epochs" else 0.0
        if trial.user_attrs["tier"] == "explore" and _spent(study, unit) + least > allowance + 1e-9:
            reason = (f"not run: the explore tier's part of the budget ({allowance:g} of {config.budget}) "
                      f"is spent")
            trial.set_user_attr("skipped", reason)
            study.tell(trial, state=TrialState.FAIL)
            _say(study, trial, strategy, lr, f"skipped: {reason}")
            continue
        _say(study, trial, strategy, lr, f"starts{_time_left(study, config)}")
        _run_trial(study, trial, strategy, lr, folder, settings)
        ran += 1
    return ran


def _label(study: optuna.Study, trial: optuna.Trial, strategy: str, lr: float) -> str:
    """Stage, trial k of N in it, strategy (knobs, model), rate and seed: what a bar and a line say."""
    attrs = trial.user_attrs
    stage = [t.number for t in _trials(study, attrs["tier"])]
    knobs = "".join(f" {k}={v}" for k, v in attrs.get("knobs", {}).items())
    flags = " no-augment" if attrs.get("augment") is False else ""
    on = f" on {attrs['model']}" if attrs.get("model") else ""
    return (f"{attrs['tier']} {stage.index(trial.number) + 1}/{len(stage)}: {strategy}{knobs}{flags}{on} "
            f"lr {lr:.3g} seed {attrs.get('seed', 0)}")


def _say(study: optuna.Study, trial: optuna.Trial, strategy: str, lr: float, what: str) -> None:
    """One line per trial above the bars, and what happens to it."""
    tqdm.write(f"[{_label(study, trial, strategy, lr)}] {what}")


def _time_left(study: optuna.Study, config: SearchConfig) -> str:
    """About how long the whole search has left, from its pace so far (epoch budgets only)."""
    unit, amount = parse_budget(config.budget)
    done = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("compute")]
    compute, seconds = sum(t.user_attrs["compute"] for t in done), sum(t.user_attrs.get("seconds", 0) for t in done)
    if unit == "seconds":
        return f"; the whole search has {max(0.0, amount - seconds) / 60:.0f} min left at most"
    if compute <= 0:
        return ""
    return f"; the whole search has about {max(0.0, amount - compute) * seconds / compute / 60:.0f} min left at most"


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


def _full_cost(strategy: str, config: SearchConfig, cacheable: bool = True) -> float:
    """What a whole explore run of `strategy` costs in epochs; a linear probe is cheap only where
    its features are cached (not QA, detection, segmentation)."""
    return CHEAP_TIER_COST if _head_only(strategy) and cacheable else float(config.epochs)


def _least_cost(strategy: str, config: SearchConfig, cacheable: bool = True) -> float:
    """What an explore run costs at least: through its grace rung, where the pruner may stop it.
    A trial is admitted when this fits; it is charged the epochs it actually runs, and stopped
    when the explore tier's budget is spent."""
    if _head_only(strategy) and cacheable:
        return CHEAP_TIER_COST
    return float(min(config.epochs, _grace(strategy)))


def _spent(study: optuna.Study, unit: str) -> float:
    key = "compute" if unit == "epochs" else "seconds"
    return sum(t.user_attrs.get(key, 0.0) for t in study.get_trials(deepcopy=False))


def _run_trial(study: optuna.Study, trial: optuna.Trial, strategy: str, lr: float, folder: Path,
               settings: dict) -> None:

    attrs = trial.user_attrs
    train = replace(TrainConfig(**settings["train"]), lr=lr, seed=attrs["seed"], epochs=attrs["epochs"],
                    patience=None, augment=attrs.get("augment", TrainConfig(**settings["train"]).augment))
    knobs, model = attrs.get("knobs", {}), attrs.get("model") or settings.get("kept", [settings["model"]])[0]
    # named by what it runs, not by trial number: a requeued trial resumes in the same folder
    variant = "".join(f"-{k}{v}" for k, v in sorted(knobs.items()))
    on = f"{file_safe(model)}-" if len(settings.get("kept", [])) > 1 else ""
    flags = "-noaug" if attrs.get("augment") is False else ""
    out = folder / "trials" / f"{attrs['tier']}-{on}{strategy}{variant}{flags}-lr{lr:.3g}-seed{attrs['seed']}"

    config = SearchConfig(**settings["search"])
    unit = parse_budget(config.budget)[0]
    cached = _head_only(strategy) and get_task(settings.get("task", DEFAULT_TASK)).cacheable
    started = time.perf_counter()

    def should_stop(epoch: int, score: float) -> bool:
        trial.report(score, epoch)
        # charged as it goes, so that other workers and the budget check see what it has spent
        trial.set_user_attr("compute", CHEAP_TIER_COST if cached else float(epoch + 1))
        trial.set_user_attr("seconds", time.perf_counter() - started)
        if epoch + 1 >= attrs["epochs"]:  # a finished run is not pruned
            return False
        if trial.should_prune():
            trial.set_user_attr("reason", f"pruned after epoch {epoch + 1}: validation {score:.4f} not in the "
                                          f"top third of its rung")
        elif attrs["tier"] == "explore" and _spent(study, unit) >= explore_allowance(config) - 1e-9:
            trial.set_user_attr("reason", f"stopped after epoch {epoch + 1} of {attrs['epochs']}: the explore "
                                          f"tier's part of the budget is spent")
        else:
            return False
        tqdm.write(f"  {strategy} lr {lr:.3g}: {trial.user_attrs['reason']}")
        return True

    run = {"model": model, "data": settings["data"], "strategy": strategy, "knobs": knobs,
           "label": _label(study, trial, strategy, lr),
           "train": asdict(train),
           "out": str(out), "task": settings.get("task", DEFAULT_TASK), "weights": settings["weights"],
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
    _drop_run_state(out)
    if record.stopped == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, record.val_score)


def _drop_run_state(folder: Path) -> None:
    """A finished trial (and LP-FT's probe inside it) keeps no resume state: only an interrupted run
    resumes from checkpoint.pt, and best.pt repeats the exported weights where the export was written."""
    for run in (folder, folder / "probe"):
        (run / "checkpoint.pt").unlink(missing_ok=True)
        if (run / "model.safetensors").is_file():
            (run / "best.pt").unlink(missing_ok=True)


def _fit_trial(run: dict, should_stop) -> RunRecord:
    from tunewise.train import fit

    strategy = get_strategy(run["strategy"], **run["knobs"])
    return fit(run["model"], DataConfig(**run["data"]), strategy, train=TrainConfig(**run["train"]),
               out=run["out"], task=run["task"], weights=run["weights"], test=False, should_stop=should_stop,
               resume=run["resume"], label=run.get("label"))


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

def interval(values: list[float], bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float, float]:
    """Mean and its 95% t-interval over seeds, kept inside `bounds` (every selection metric is a
    fraction; a difference of two lies in [-1, 1]): the fallback for tasks whose metric is not a
    sum over examples (detection's mAP)."""
    from scipy import stats

    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))
    return mean, max(bounds[0], mean - half), min(bounds[1], mean + half)


BOOTSTRAP = ("pigeonhole bootstrap over seeds and validation examples (Owen 2007), 95%; differences paired "
             "over examples")
T_INTERVAL = "t-interval over seeds only (this task's metric cannot be resampled per example), 95%"


class Judge:
    """Intervals for arms and differences between arms, from each run's per-example statistics
    (the pigeonhole bootstrap, tunewise.stats) or, where a task has none, over seeds alone."""

    def __init__(self, task, metric: str) -> None:
        self.metric = lambda stats: task.metric_from_stats(stats, metric)
        self.method = BOOTSTRAP if hasattr(task, "metric_from_stats") else T_INTERVAL

    def stats(self, arm: Arm) -> list[np.ndarray] | None:
        paths = [Path(d) / EXAMPLE_STATS for d in arm.run_dirs]
        if self.method != BOOTSTRAP or not paths or not all(p.is_file() for p in paths):
            return None
        return [np.load(p) for p in paths]

    def arm(self, arm: Arm) -> None:
        stats = self.stats(arm)
        arm.mean, arm.ci_low, arm.ci_high = mean_interval(stats, self.metric) if stats else interval(arm.scores)

    def difference(self, a: Arm, b: Arm) -> dict:
        """a - b: its mean, 95% interval, and whether it is significant, in words."""
        sa, sb = self.stats(a), self.stats(b)
        if sa and sb and len(sa[0]) == len(sb[0]):
            mean, low, high = difference_interval(sa, sb, self.metric)
        else:
            common = sorted(set(a.seeds) & set(b.seeds))
            diffs = [a.scores[a.seeds.index(x)] - b.scores[b.seeds.index(x)] for x in common]
            mean, low, high = interval(diffs, (-1.0, 1.0)) if diffs else (a.mean - b.mean, math.nan, math.nan)
        significant, words = verdict(mean, low, high, min(len(a.seeds), len(b.seeds)))
        return {"versus": b.name, "of": a.name, "seeds": [len(a.seeds), len(b.seeds)], "mean": mean,
                "ci_low": low, "ci_high": high, "significant": significant, "verdict": words}

    def detectable(self, arm: Arm) -> float | None:
        stats = self.stats(arm)
        return detectable_difference(stats[0], self.metric) if stats else None


def decide(study, run_dir: Path, model: str, data: DataConfig, config: SearchConfig, seconds: float,
           has_test: bool, task, metric: str, metric_reason: str) -> Leaderboard:
    """Arms from seeded runs, intervals, a tie-aware pick, one test evaluation each."""
    trials = [_trial_record(t) for t in study.get_trials(deepcopy=False) if t.user_attrs.get("tier") != "none"]
    judge = Judge(task, metric)
    arms = []
    for best in _finalists(study, config.finalists):
        runs = [best, *[t for t in _trials(study, "final") if t.user_attrs.get("of") == best.number]]
        arms.append(_arm(best.params["strategy"], best.params["lr"], runs))
    scratch_runs = [t for t in _trials(study, BASELINE_TIER) if t.state == TrialState.COMPLETE]
    if scratch_runs:
        best = max((t for t in scratch_runs if not t.user_attrs.get("seeded")), key=lambda t: t.value)
        arms.append(_arm(BASELINE_STRATEGY, best.params["lr"], [best, *[t for t in scratch_runs if
                                                                 t.user_attrs.get("of") == best.number]]))
    arms = [a for a in arms if a.seeds]
    if not arms:
        raise TunewiseError(f"no trial of the search in {str(run_dir)!r} completed; see leaderboard.csv "
                            "for each trial's reason, and give a larger --budget.")
    for arm in arms:
        judge.arm(arm)
    arms.sort(key=lambda a: -a.mean)
    scratch = next((a for a in arms if a.strategy == BASELINE_STRATEGY), None)
    winner, pick = _pick([a for a in arms if a is not scratch], scratch, judge)
    others = [a for a in arms if a is not winner and a is not scratch]
    probe_arm = next((a for a in arms if _head_only(a.strategy)), None)
    for arm in {id(a): a for a in (winner, *others[:1], scratch, probe_arm) if a is not None}.values():
        if has_test:
            arm.test = evaluate(arm.run_dirs[0], data, split="test")
    board = Leaderboard(
        run_dir=str(run_dir), model=model, data=data.data, metric=metric, budget=config.budget,
        trials=trials, arms=arms, winner=winner.name,
        runner_up=judge.difference(winner, others[0]) if others else None,
        versus_scratch=judge.difference(winner, scratch) if scratch and winner is not scratch else None,
        linear_probe_test=probe_arm.test if probe_arm else None,
        compute=round(sum(t.compute for t in trials), 3), seconds=round(seconds, 1),
        metric_reason=metric_reason, pick=pick, interval_method=judge.method,
        detectable=judge.detectable(winner), unmeasured=_unmeasured(trials, config),
        baseline=_run_record(winner.run_dirs[0]).baseline, classes=_run_record(winner.run_dirs[0]).classes,
        seeds=config.seeds,
    )
    board.warnings = _warnings(board, winner, scratch)
    _export_winner(winner, run_dir)
    _remove_unkept_weights(run_dir, arms)
    return board


def _pick(pretrained: list[Arm], scratch: Arm | None, judge: Judge) -> tuple[Arm, dict]:
    """The arm handed back, by a stated rule: of the pretrained arms that cannot be told apart from
    the best by mean, the one that costs least to train; at equal compute the best by mean (fewer
    trainable parameters is no reason to give up a better mean: the export is a whole model either
    way). Scratch only when it beat the best pretrained arm significantly (or nothing pretrained
    completed)."""
    rule = ("the arm with the least training compute among those that cannot be told apart from the best by "
            "mean; at equal compute, the best by mean")
    if not pretrained:
        return scratch, {"rule": "no pretrained arm completed", "best_by_mean": scratch.name, "tied": [],
                         "picked": scratch.name}
    best = pretrained[0]
    if scratch is not None and judge.difference(scratch, best)["significant"] and scratch.mean > best.mean:
        return scratch, {"rule": "scratch beat the best pretrained arm significantly", "best_by_mean": scratch.name,
                         "tied": [], "picked": scratch.name}
    tied = [a for a in pretrained[1:] if not judge.difference(best, a)["significant"]]
    picked = min([best, *tied], key=lambda a: (round(a.cost, 3), -a.mean))
    return picked, {"rule": rule, "best_by_mean": best.name, "tied": [a.name for a in tied], "picked": picked.name}


def _unmeasured(trials: list[TrialRecord], config: SearchConfig) -> dict[str, str]:
    """Strategies asked for with no explore epoch run at all, and why (skipped, failed)."""
    missing = {}
    for strategy in config.strategies:
        mine = [t for t in trials if t.tier == "explore" and t.strategy == strategy]
        if not any(t.epochs_run > 0 for t in mine):
            missing[strategy] = next((t.reason for t in mine if t.reason), "never queued")
    return missing


def _warnings(board: Leaderboard, winner: Arm, scratch: Arm | None) -> list[str]:
    """What a reader must not miss: few seeds, a class never predicted, a model no better than
    always answering the majority class."""
    found = []
    if board.seeds < 3:
        found.append(f"--seeds {board.seeds}: with fewer than 3 seeds the variation between seeds is barely "
                     "measured, and no difference is called significant from a single seed")
    for arm in (winner, scratch):
        if arm and arm.val and arm.val.get("never_predicted"):
            names = ", ".join(board.classes[c] for c in arm.val["never_predicted"])
            found.append(f"{arm.name} never predicts the class {names} on validation")
        if arm and board.baseline and arm.ci_low <= board.baseline.get(board.metric, -1):
            found.append(f"{arm.name} is not clearly better than always answering {board.baseline['predicts']!r} "
                         f"({board.metric} {board.baseline[board.metric]:.1%})")
    return found


def _remove_unkept_weights(run_dir: Path, arms: list[Arm]) -> None:
    """Trials keep only what resume and the report need: the arms' runs keep their weights, the
    others their records and curves."""
    kept = {Path(d).resolve() for a in arms for d in a.run_dirs}
    for trial in (run_dir / "trials").glob("*"):
        if trial.resolve() in kept:
            continue
        for file in [*trial.glob("*.pt"), *trial.glob("*.safetensors"), *trial.glob("*.bin"),
                     *trial.glob("probe/*.pt"), *trial.glob("probe/*.safetensors")]:
            file.unlink(missing_ok=True)


def _run_record(run_dir: str) -> RunRecord:
    return RunRecord.load(Path(run_dir) / "record.json")


def _arm(strategy: str, lr: float, runs: list) -> Arm:
    runs = sorted((t for t in runs if t.state == TrialState.COMPLETE), key=lambda t: t.user_attrs["seed"])
    records = [_run_record(t.user_attrs["run_dir"]) for t in runs]
    scores = [t.value for t in runs]
    first = runs[0].user_attrs if runs else {}
    return Arm(strategy=strategy, lr=lr, seeds=[t.user_attrs["seed"] for t in runs], scores=scores,
               mean=float(np.mean(scores)) if scores else math.nan, ci_low=math.nan, ci_high=math.nan,
               run_dirs=[t.user_attrs["run_dir"] for t in runs], knobs=first.get("knobs", {}),
               model=first.get("model"), augment=first.get("augment", True),
               cost=float(np.mean([t.user_attrs.get("compute", 0.0) for t in runs])) if runs else 0.0,
               trainable_params=records[0].trainable_params if records else 0,
               val=records[0].val if records else None)


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
        model=t.user_attrs.get("model"), augment=t.user_attrs.get("augment", True),
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
            "task": settings.get("task", DEFAULT_TASK),
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
