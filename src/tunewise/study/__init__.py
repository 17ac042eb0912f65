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
import os
import secrets
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tunewise.assemble import check_backbone_fits
from tunewise.backbones import load_backbone
from tunewise.backbones.base import Backbone
from tunewise.config import (
    DEFAULT_TASK,
    DataConfig,
    TrainConfig,
    raise_if_problems,
    to_dict,
    validate_data,
    validate_train,
    with_task_knobs,
)
from tunewise.data import load_data
from tunewise.data.base import DataSplits
from tunewise.errors import ConfigError, RunFolderError, TunewiseError
from tunewise.io import claim_folder, default_run_dir, write_atomic, write_json
from tunewise.records import Leaderboard
from tunewise.report.search_report import write_report
from tunewise.strategies import refusals
from tunewise.study.budget import default_budget, reserved_cost, unmeasurable, validate_search
from tunewise.study.config import SearchConfig, strategy_list
from tunewise.study.decision import decide
from tunewise.study.tiers import (
    BASELINE_TIER,
    enqueue_explore,
    enqueue_finals,
    enqueue_no_augment,
    enqueue_past_edges,
    enqueue_scratch,
    trials_of,
)
from tunewise.study.workers import (
    broadcast,
    connect,
    data_parallel,
    drain,
    follow,
    masked,
    open_study,
    requeue_dead,
    serve,
    work,
)
from tunewise.tasks import Task, get_task
from tunewise.train import selection_metric

__all__ = ["SearchConfig", "default_budget", "reserved_cost", "resume_search", "search", "serve", "unmeasurable",
           "work"]

log = logging.getLogger("tunewise")


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
    task: str | Task = DEFAULT_TASK,
    **overrides: Any,
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
        task: a registered task (`text_classification`, ...), or one with its knobs set
            (`get_task("object_detection", detector="fcos")`); its metric selects.

    Returns:
        The Leaderboard, also written to `out/leaderboard.json` (and .csv).
    """
    config = replace(config or SearchConfig(), **overrides)
    if isinstance(config.strategies, str):
        config = replace(config, strategies=strategy_list(config.strategies))
    models = [model] if isinstance(model, str) else list(dict.fromkeys(model))
    model = models[0]
    the_task = get_task(task) if isinstance(task, str) else task  # an unknown task fails before anything is written
    task = the_task.name
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
    splits = load_data(data_config, the_task)  # fail on bad data, model or storage first
    has_test = splits.test is not None
    metric, metric_reason = search_metric(the_task, splits, train.metric)
    train = replace(train, metric=metric)  # every trial selects on the same metric
    backbone = None
    if len(models) == 1:  # several are loaded by the ranking, which reports the ones that fail
        backbone = load_backbone(model, weights=weights)
        check_backbone_fits(backbone, the_task, model)
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
    settings = {"model": model, "models": models, "weights": weights, "task": task, "task_knobs": the_task.knobs(),
                "data": to_dict(data_config),
                "train": to_dict(train), "search": asdict(config), "storage": masked(storage) if storage else None}
    refused: dict[str, str] = {}
    if backbone and not resume:  # refused before the run folder exists
        refused = _refused(config, the_task, [backbone], splits.classes)
        settings["refused"] = refused
    _warn_before(config, searched, the_task.cacheable, metric_reason, refused)
    run_dir = _open_search_dir(out, model, settings, resume)
    study = open_study(run_dir, storage)
    if resume:  # the search goes on as it was started
        saved = _saved_settings(run_dir)
        config = SearchConfig(**{**saved["search"], "strategies": tuple(saved["search"]["strategies"])})
        requeue_dead(study)
    started = time.perf_counter()
    kept = _kept_models(run_dir, models, data_config, task, config, train)
    refused = _refusals_of(run_dir, kept, config, the_task, splits.classes, backbone)

    if not trials_of(study, "explore"):
        enqueue_explore(study, config, kept, task, leave_out=refused)
    drain(run_dir, study, config.workers, storage)
    if the_task.augments and not any("augment" in t.user_attrs for t in trials_of(study, "explore")):
        enqueue_no_augment(study, config, _saved_settings(run_dir))
        drain(run_dir, study, config.workers, storage)
    if not trials_of(study, "final") and enqueue_past_edges(study, config):
        drain(run_dir, study, config.workers, storage)
    if not trials_of(study, "final"):
        enqueue_finals(study, config)
    if config.scratch and not trials_of(study, BASELINE_TIER):
        enqueue_scratch(study, config, seeds=False)
    drain(run_dir, study, config.workers, storage)
    if config.scratch and not trials_of(study, BASELINE_TIER, seeds=True):
        enqueue_scratch(study, config, seeds=True)
        drain(run_dir, study, config.workers, storage)

    board = decide(study, run_dir, kept[0], data_config, config, time.perf_counter() - started, has_test,
                   the_task, metric, metric_reason, refused)
    board.save(run_dir / "leaderboard.json")
    write_atomic(run_dir / "leaderboard.csv", lambda tmp: Path(tmp).write_text(board.csv()))
    winner = next((a for a in board.arms if a.name == board.winner), None)
    the_task.illustrate(run_dir, (winner and winner.model) or kept[0], data_config)  # boxes, masks, generations
    write_report(board, run_dir)
    if data_parallel():
        broadcast({"done": str(run_dir)})
    return board


def resume_search(run_dir: str | Path, storage: str | None = None, given: dict[str, Any] | None = None) -> Leaderboard:
    """Continue the search in `run_dir` with the settings it was started with (its settings.json).

    Args:
        storage: the study storage's URL, where it is not the one in settings.json (a password
            kept out of it).
        given: settings passed again, spelled as the command line's (`model`, `models`, `weights`,
            `task`, `data.image_size`, `train.batch_size`, `search.epochs`, ...); refused where
            they differ from the search's own, as nothing of a started search can change.
    """
    run_dir = Path(run_dir)
    saved = _saved_settings(run_dir)
    differ = [f"{key} {value!r} (the search's: {_setting(saved, key)!r})" for key, value in (given or {}).items()
              if _setting(saved, key) != value]
    if differ:
        raise ConfigError(f"cannot resume {str(run_dir)!r} with other settings: {'; '.join(differ)}. A started search "
                          "keeps its settings: drop those flags (`tunewise search --resume --out DIR` needs no "
                          "other), or start a new search in another --out.")
    config = SearchConfig(**{**saved["search"], "strategies": tuple(saved["search"]["strategies"])})
    return search(saved["models"], DataConfig(**saved["data"]), config, train=TrainConfig(**saved["train"]),
                  out=run_dir, storage=storage or saved.get("storage"), resume=True, weights=saved.get("weights"),
                  task=get_task(saved.get("task", DEFAULT_TASK), **saved["task_knobs"]))


def _saved_settings(run_dir: Path) -> dict[str, Any]:
    """A search folder's settings.json, with `models` (a search from before --models has `model` alone)
    and `task_knobs` (see with_task_knobs)."""
    path = run_dir / "settings.json"
    if not path.is_file():
        raise RunFolderError(f"nothing to resume in {str(run_dir)!r}: no settings.json. Pass the folder a search "
                             "wrote (its --out), or start a new search without --resume.")
    saved: dict[str, Any] = with_task_knobs(json.loads(path.read_text()))
    saved.setdefault("models", [saved.get("model")])
    return saved


def _setting(saved: dict[str, Any], key: str) -> Any:
    """`data.image_size` -> saved["data"]["image_size"]; `weights` -> saved["weights"]; a task knob
    (`task.detector`) -> saved["task_knobs"]["detector"]."""
    section, _, name = key.rpartition(".")
    section = "task_knobs" if section == "task" else section
    return saved.get(section, {}).get(name) if section else saved.get(name)


def search_metric(task: Task, splits: DataSplits, asked: str | None) -> tuple[str, str]:
    """`selection_metric`, where higher wins: the arms' intervals and the pick compare fractions, so a
    generator's search compares next-token accuracy, not perplexity.

    Raises:
        ConfigError: `--metric` asked for one where lower wins.
    """
    metric, reason = selection_metric(task, splits, asked)
    if metric not in task.lower_is_better:
        return metric, reason
    usable = [m for m in task.metrics_names if m not in task.lower_is_better]
    if asked is not None or not usable:
        raise ConfigError(f"--metric {metric} is better lower, and a search compares arms on fractions where higher "
                          f"wins. Pass --metric {' or '.join(usable) or 'another metric'}, or fit each strategy.")
    return usable[0], f"{usable[0]} ({metric}, {task.name}'s metric, is better lower; a search compares fractions)"


def _refused(config: SearchConfig, task: Task, backbones: list[Backbone], classes: list[str]) -> dict[str, str]:
    """The asked-for strategies that cannot fine-tune any of these backbones (peft's VeRA on CNNs, peft
    adapters on Keras layers), and why: left out of the search, named in its report (one that only some
    models refuse runs, and fails on those with the reason). The budget stays sized on every strategy
    asked for. None left is an error."""
    each = [refusals(config.strategies, task.build_model(backbone, classes), config.knobs) for backbone in backbones]
    refused = {name: why for name, why in each[0].items() if all(name in other for other in each[1:])}
    if refused and set(refused) == set(config.strategies):
        raise ConfigError("no strategy asked for can fine-tune this model: " +
                          "; ".join(f"{name}: {why}" for name, why in refused.items()))
    for name, why in refused.items():
        log.warning("search: %s is left out: %s", name, why)
    return refused


def _warn_before(config: SearchConfig, models: int, cacheable: bool, metric_reason: str,
                 refused: dict[str, str]) -> None:
    """What the user should know before the search spends anything (of the strategies not `refused`)."""
    log.info("selecting on %s", metric_reason)
    if config.seeds < 3:
        log.warning("--seeds %d: the finals measure the variation between seeds with %s; intervals will be wide "
                    "and a single seed is never called significant. 3 is the default.", config.seeds,
                    "one seed, so not at all" if config.seeds == 1 else "two seeds, barely")
    asked = replace(config, strategies=tuple(s for s in config.strategies if s not in refused))
    dropped = unmeasurable(asked, models, cacheable)
    if dropped:
        log.warning("--budget %s leaves no room to measure %s (even through the grace epochs at the middle rate); "
                    "they will be reported as not measured. Without --budget every strategy is measured.",
                    config.budget, ", ".join(dropped))


def _refusals_of(run_dir: Path, kept: list[str], config: SearchConfig, task: Task, classes: list[str],
                 loaded: Backbone | None) -> dict[str, str]:
    """The strategies left out (`_refused`) for the models the search fine-tunes: found before the run
    folder for one model, after the ranking for several; recorded in settings.json, so a resumed search
    leaves out the same (one started before they were recorded finds them now)."""
    settings = json.loads((run_dir / "settings.json").read_text())
    if "refused" in settings:
        refused: dict[str, str] = settings["refused"]
        return refused
    backbones = []
    for name in kept:
        backbone = loaded if loaded is not None and len(kept) == 1 else load_backbone(name)
        check_backbone_fits(backbone, task, name)
        backbones.append(backbone)
    refused = _refused(config, task, backbones, classes)
    write_json(run_dir / "settings.json", {**settings, "refused": refused})
    return refused


def _kept_models(run_dir: Path, models: list[str], data: DataConfig, task: str, config: SearchConfig,
                 train: TrainConfig) -> list[str]:
    """The models the search fine-tunes: the one given, or the best `keep_models` of a ranking
    of several (the cheapest tier: one feature pass each). Recorded in settings.json, so a
    resumed search and every worker fine-tune the same ones; the scratch baseline takes the
    first one's architecture."""
    settings = json.loads((run_dir / "settings.json").read_text())
    if "kept" in settings:
        kept: list[str] = settings["kept"]
        return kept
    kept = models
    if len(models) > 1:
        from tunewise.choose import rank

        ranking = rank(models, data, task=task, out=run_dir / "ranking", train=train)
        kept = [c.model for c in ranking.candidates if c.error is None][:config.keep_models]
        log.info("ranking kept %s for fine-tuning (of %s)", ", ".join(kept), ", ".join(models))
    write_json(run_dir / "settings.json", {**settings, "kept": kept})
    return kept


def _open_search_dir(out: str | Path | None, model: str, settings: dict[str, Any], resume: bool) -> Path:
    run_dir = Path(out) if out is not None else default_run_dir(model, prefix="search-")
    saved_path = run_dir / "settings.json"
    if resume:
        saved = _saved_settings(run_dir)
        differ = [k for k in ("models", "weights", "data") if saved.get(k) != settings[k]]
        if differ:
            detail = "; ".join(f"{k}: {saved.get(k)!r} there, {settings[k]!r} given" for k in differ)
            raise TunewiseError(f"cannot resume {str(run_dir)!r} with another {', '.join(differ)} ({detail}). "
                                "Resume with the same model and data, or start a new search.")
        return run_dir
    if saved_path.exists():
        raise TunewiseError(f"{str(run_dir)!r} already holds a search. Pass --resume to continue it, or another "
                            "--out.")
    claim_folder(run_dir)
    # unique in a shared database, where many searches (and old ones) keep their studies
    write_json(saved_path, {**settings, "study": f"{run_dir.name}-{secrets.token_hex(4)}"})
    return run_dir
