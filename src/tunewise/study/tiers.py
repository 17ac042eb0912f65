"""The tiers of a search (explore, final, scratch) as trials queued on one Optuna study, and the pruner."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from typing import cast

import optuna
from optuna.trial import TrialState

from tunewise.config import (
    BASELINE_STRATEGY,
    DEFAULT_TASK,
    TrainConfig,
)
from tunewise.strategies import STRATEGIES, in_search_order
from tunewise.study.config import SearchConfig
from tunewise.tasks import get_task

log = logging.getLogger("tunewise")


BASELINE_TIER = BASELINE_STRATEGY


"""The tier of the from-scratch baseline's runs (named after what it trains)."""


class GracePruner(optuna.pruners.BasePruner):
    """Successive halving (keep the top third at each rung) after a per-strategy grace period;
    only explore trials are ever pruned."""

    def __init__(self) -> None:
        self.base = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if trial.user_attrs.get("tier") != "explore" or step is None:
            return False
        if step + 1 < grace(trial.params.get("strategy", "")):
            return False
        return self.base.prune(study, trial)


def trials_of(study: optuna.Study, tier: str, seeds: bool | None = None) -> list[optuna.trial.FrozenTrial]:
    found = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("tier") == tier]
    if seeds is not None:
        found = [t for t in found if t.user_attrs.get("seeded", False) == seeds]
    return found


def strategy_choices(study: optuna.Study | None = None) -> list[str]:
    """Every strategy a trial may run (its Optuna categorical): the registered ones, in search order,
    or, in a study that already has some, the list it was started with. Optuna refuses a categorical
    that changes (its order included), so a search started before a strategy was added resumes,
    and its workers join, with the list it began with."""
    for trial in study.get_trials(deepcopy=False) if study is not None else ():
        if "strategy" in trial.distributions:
            choices = cast(optuna.distributions.CategoricalDistribution, trial.distributions["strategy"]).choices
            return [str(choice) for choice in choices]
    return in_search_order(STRATEGIES.names())


def head_only(strategy: str) -> bool:
    return strategy in STRATEGIES and STRATEGIES.get(strategy).head_only


def grace(strategy: str) -> int:
    return STRATEGIES.get(strategy).grace_epochs if strategy in STRATEGIES else 1


def rates(strategy: str, count: int, task: str = DEFAULT_TASK) -> list[float]:
    """`count` rates log-spaced over the strategy's range, the middle one first."""
    return STRATEGIES.get(strategy).rates(count, deep_head=get_task(task).dense)


def enqueue_explore(study: optuna.Study, config: SearchConfig, models: list[str], task: str,
                    leave_out: Collection[str] = ()) -> None:
    ordered = [s for s in in_search_order(config.strategies) if s not in leave_out]
    grid = {s: rates(s, config.rates, task) for s in ordered}
    variants = {s: list(STRATEGIES.get(s).knob_grid or [{}]) if config.knobs else [{}] for s in ordered}
    for index in range(config.rates):  # every strategy at its first rate before any second rate
        for strategy in ordered:
            for knobs in variants[strategy]:
                for model in models:
                    study.enqueue_trial({"strategy": strategy, "lr": grid[strategy][index]},
                                        user_attrs={"tier": "explore", "seed": 0, "epochs": config.epochs,
                                                    "knobs": knobs, "model": model if len(models) > 1 else None})


def enqueue_finals(study: optuna.Study, config: SearchConfig) -> None:
    for best in finalists(study, config.finalists):
        first = 1 if best.state == TrialState.COMPLETE else 0  # a complete explore run is its arm's seed 0
        for seed in range(first, config.seeds):
            study.enqueue_trial(dict(best.params), user_attrs={
                "tier": "final", "seed": seed, "epochs": config.epochs, "of": best.number,
                **{k: best.user_attrs[k] for k in ("knobs", "model", "augment") if k in best.user_attrs}})


def enqueue_no_augment(study: optuna.Study, config: SearchConfig, settings: dict) -> None:
    """The best explore run that trained its backbone, once more without augmentation: flips and
    crops can destroy labels (mirrored digits, text in images), and only a measurement tells."""
    trained = [t for t in trials_of(study, "explore") if t.state == TrialState.COMPLETE
               and not (head_only(t.params["strategy"]) and get_task(settings["task"]).cacheable)]
    if trained and TrainConfig(**settings["train"]).augment:
        best = max(trained, key=completed_value)
        attrs: dict[str, object] = {k: best.user_attrs[k] for k in ("tier", "seed", "epochs", "knobs", "model")
                                    if k in best.user_attrs}
        study.enqueue_trial(dict(best.params), user_attrs={**attrs, "augment": False, "of": best.number})


def enqueue_past_edges(study: optuna.Study, config: SearchConfig) -> int:
    """For each would-be finalist whose best rate is the highest (or lowest) its arm tried, one more
    explore run a range step above (below) it: a best rate at the end of a range says the best
    lies past it, and the finals can only pick among the rates tried. Short schedules favour the top
    of the ranges (bench/README.md, decision_quality: 9 of 11 strategies on a Fashion-MNIST subset at
    3 epochs). Once per search, before the finals; returns how many it queued."""
    explore = trials_of(study, "explore")
    if config.rates < 2 or any("past_edge" in t.user_attrs for t in explore):
        return 0
    queued = 0
    for best in finalists(study, config.finalists):
        tried = sorted({t.params["lr"] for t in explore if "lr" in t.params and _arm(t) == _arm(best)})
        lr = best.params["lr"]
        if best.state != TrialState.COMPLETE or len(tried) < 2 or tried[0] < lr < tried[-1]:
            continue
        step = tried[1] / tried[0]  # the rates are log-spaced
        beyond = lr * step if lr == tried[-1] else lr / step
        attrs: dict[str, object] = {k: best.user_attrs[k] for k in ("tier", "seed", "epochs", "knobs", "model",
                                                                    "augment") if k in best.user_attrs}
        study.enqueue_trial({"strategy": best.params["strategy"], "lr": beyond},
                            user_attrs={**attrs, "past_edge": "above" if beyond > lr else "below", "of": best.number})
        queued += 1
    return queued


def _arm(trial: optuna.trial.FrozenTrial) -> tuple:
    """What sets an arm's rate range apart: strategy, knobs, model. Not augmentation: the run without
    it repeats the best rate alone, and the rates tried with it say where the range ends."""
    attrs = trial.user_attrs
    return trial.params.get("strategy"), json.dumps(attrs.get("knobs") or {}, sort_keys=True), attrs.get("model")


def finalists(study: optuna.Study, count: int) -> list[optuna.trial.FrozenTrial]:
    """The best explore trial of each strategy (on each model), best first.

    Completed trials first. When fewer than `count` strategies completed, the best pruned or
    budget-stopped trials of the others fill the places (the finals then run them in full over
    every seed), so the finals compare strategies whenever two were measured: scratch is the
    baseline, never the runner-up.
    """
    complete: dict[tuple, optuna.trial.FrozenTrial] = {}
    partial: dict[tuple, optuna.trial.FrozenTrial] = {}
    for t in trials_of(study, "explore"):
        key = (t.params["strategy"], t.user_attrs.get("model"))
        if t.state == TrialState.COMPLETE and (key not in complete
                                               or completed_value(t) > completed_value(complete[key])):
            complete[key] = t
        elif t.state == TrialState.PRUNED and t.intermediate_values and (
                key not in partial or best_seen(t) > best_seen(partial[key])):
            partial[key] = t
    chosen = sorted(complete.values(), key=lambda t: -completed_value(t))[:count]
    fill = sorted((t for k, t in partial.items() if k not in complete), key=lambda t: -best_seen(t))
    return chosen + fill[:count - len(chosen)]


def completed_value(trial: optuna.trial.FrozenTrial) -> float:
    """A completed trial's value (optuna types `value` Optional: a trial in another state has none)."""
    if trial.value is None:
        raise ValueError(f"trial {trial.number} has no value: it did not complete")
    return trial.value


def best_seen(trial: optuna.trial.FrozenTrial) -> float:
    return max(trial.intermediate_values.values())


def enqueue_scratch(study: optuna.Study, config: SearchConfig, seeds: bool) -> None:
    epochs = config.scratch_epochs or 2 * config.epochs
    if not seeds:
        for lr in rates(BASELINE_STRATEGY, 2):
            study.enqueue_trial({"strategy": BASELINE_STRATEGY, "lr": lr},
                                user_attrs={"tier": BASELINE_TIER, "seed": 0, "epochs": epochs, "seeded": False})
        return
    done = [t for t in trials_of(study, BASELINE_TIER, seeds=False) if t.state == TrialState.COMPLETE]
    if done:
        best = max(done, key=completed_value)
        for seed in range(1, config.seeds):
            study.enqueue_trial(dict(best.params), user_attrs={"tier": BASELINE_TIER, "seed": seed, "epochs": epochs,
                                                               "seeded": True, "of": best.number})
