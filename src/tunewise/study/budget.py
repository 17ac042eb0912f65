"""The budget: what each tier may spend, what a trial costs, and what has been spent."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import optuna
from filelock import FileLock
from optuna.trial import TrialState

from tunewise.config import SEARCH_NUMBERS, number_problems
from tunewise.errors import ConfigError
from tunewise.registry import did_you_mean
from tunewise.strategies import STRATEGIES, in_search_order
from tunewise.study.config import SearchConfig
from tunewise.study.tiers import grace, head_only

log = logging.getLogger("tunewise")


TIME_EXPLORE_SHARE = 0.6


"""With a time budget, the share the explore tier may spend; finals and scratch use the rest.
With an epoch budget, the explore tier gets what the finals and the scratch baseline leave."""


CHEAP_TIER_COST = 1 / 3


def reserved_cost(config: SearchConfig) -> float:
    """Epochs the final and scratch tiers will train, at most: kept aside from an epoch budget."""
    finals = config.finalists * (config.seeds - 1) * config.epochs
    scratch_epochs = config.scratch_epochs or 2 * config.epochs
    scratch = (2 + config.seeds - 1) * scratch_epochs if config.scratch else 0
    return finals + scratch


def default_budget(config: SearchConfig, models: int = 1, cacheable: bool = True, augments: bool = False) -> str:
    """The finals and the scratch baseline, plus, on each searched model, every strategy for its
    whole schedule at its middle rate and through its grace rung at its other rates (where the
    pruner judges it) and, for the third of those that its successive halving lets on, to the end,
    plus one run without augmentation where the task augments, plus a run past the end of the range
    for each finalist (tiers.enqueue_past_edges): every strategy is measured, and every rate is seen
    (a trial goes past its grace epochs only while the trials still waiting keep theirs: `reserve`)."""
    explore = sum(full_cost(s, config, cacheable) + (config.rates - 1) * least_cost(s, config, cacheable)
                  + (config.rates - 1) / 3 * (full_cost(s, config, cacheable) - least_cost(s, config, cacheable))
                  for s in config.strategies)
    extra = (config.epochs if augments else 0) + (config.finalists * config.epochs if config.rates > 1 else 0)
    return f"{math.ceil(reserved_cost(config) + models * explore + extra - 1e-9):g}epochs"


def unmeasurable(config: SearchConfig, models: int = 1, cacheable: bool = True) -> list[str]:
    """The strategies an epoch budget cannot take even through their grace rung at their middle
    rate, cheapest first, after the finals and the scratch baseline have their share."""
    if config.limit.unit != "epochs":
        return []
    left, dropped = explore_allowance(config), []
    for strategy in in_search_order(config.strategies):
        need = models * least_cost(strategy, config, cacheable)
        if need > left + 1e-9:
            dropped.append(strategy)
        else:
            left -= need
    return dropped


def explore_allowance(config: SearchConfig) -> float:
    """What the explore tier may spend, in the budget's unit."""
    unit, amount = config.limit.unit, config.limit.amount
    return amount - reserved_cost(config) if unit == "epochs" else TIME_EXPLORE_SHARE * amount


def full_cost(strategy: str, config: SearchConfig, cacheable: bool = True) -> float:
    """What a whole explore run of `strategy` costs in epochs; a linear probe is cheap only where
    its features are cached (not QA, detection, segmentation)."""
    return CHEAP_TIER_COST if head_only(strategy) and cacheable else float(config.epochs)


def least_cost(strategy: str, config: SearchConfig, cacheable: bool = True) -> float:
    """What an explore run costs at least: through its grace rung, where the pruner may stop it.
    A trial is admitted when this fits; it is charged the epochs it actually runs, and stopped
    when the explore tier's budget is spent."""
    if head_only(strategy) and cacheable:
        return CHEAP_TIER_COST
    return float(min(config.epochs, grace(strategy)))


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def committed(study: optuna.Study, unit: str, but: int | None = None) -> float:
    """What the trials have spent, each running one counted at least at what it has reserved: what
    no other worker may spend. `but`: a trial left out (the one asking)."""
    key = "compute" if unit == "epochs" else "seconds"
    total = 0.0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, *FINISHED)):
        if t.number != but:
            used = t.user_attrs.get(key, 0.0)
            total += max(used, t.user_attrs.get("reserved", 0.0)) if t.state == TrialState.RUNNING else used
    return total


def waiting_grace(study: optuna.Study, config: SearchConfig, cacheable: bool) -> float:
    """What the explore trials still waiting to start need at least, each through its grace rung
    (epoch budgets; nothing with a time budget)."""
    if config.limit.unit != "epochs":
        return 0.0
    return sum(least_cost(t.system_attrs["fixed_params"]["strategy"], config, cacheable)
               for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
               if t.user_attrs.get("tier") == "explore" and "strategy" in t.system_attrs.get("fixed_params", {}))


def reserve(study: optuna.Study, trial: optuna.Trial, unit: str, need: float, allowance: float, lock: Path,
            keep_free: Callable[[], float] | None = None) -> bool:
    """Reserve `need` for `trial` (what it will have cost through its next epoch, in the budget's unit;
    a reservation never shrinks) when that fits in `allowance` beside what every other trial has spent
    or reserved; False changes nothing. Check and reservation hold the file lock `lock` in the search
    folder, which every worker shares (other processes, other machines): one at a time, so workers
    running at once never spend more than the allowance between them (checking what others had spent,
    but not what their running trials would, let two workers overrun an explore tier by an epoch each).
    `keep_free()`, read under the lock, is held back for others (`waiting_grace`: the trials still to
    start, each through its grace rung, so that one strong arm running on does not leave the last arms
    of the queue unmeasured, as lp_ft's top rate was on the NER benchmark). Only when all of it fits
    beside what is spent: under a budget too small for every arm's grace (search_vs_grid's 10
    epochs), holding it back stopped every arm after one epoch and lost the search 10 points."""
    with FileLock(lock):
        need = max(need, trial.user_attrs.get("reserved", 0.0))
        others = committed(study, unit, but=trial.number)
        held = keep_free() if keep_free is not None else 0.0
        if others + trial.user_attrs.get("reserved", 0.0) + held > allowance + 1e-9:
            held = 0.0  # a budget too small to give them all their grace anyway: no arm is held back
        if others + need + held > allowance + 1e-9:
            return False
        trial.set_user_attr("reserved", need)
        return True


def validate_search(config: SearchConfig) -> list[str]:
    problems = []
    for name in config.strategies:
        if name not in STRATEGIES or not STRATEGIES.get(name).pretrained:
            allowed = [s for s in STRATEGIES.names() if STRATEGIES.get(s).pretrained]
            problems.append(f"--strategies has unknown {name!r}.{did_you_mean(name, allowed)} "
                            f"Allowed: all, or some of {', '.join(allowed)}")
    if not config.strategies:
        problems.append("--strategies names no strategy")
    problems += number_problems(asdict(config), SEARCH_NUMBERS)
    try:
        unit = config.limit.unit
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
