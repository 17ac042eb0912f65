"""The decision: arms from finished trials, their intervals, the pick, and the leaderboard."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from tunewise.config import (
    BASELINE_STRATEGY,
    DEFAULT_TASK,
    DataConfig,
)
from tunewise.errors import TunewiseError
from tunewise.inference import evaluate
from tunewise.io import write_atomic
from tunewise.records import Arm, Leaderboard, RunRecord, TrialRecord
from tunewise.stats import detectable_difference, difference_interval, mean_interval, verdict
from tunewise.study.config import SearchConfig
from tunewise.study.tiers import BASELINE_TIER, completed_value, finalists, head_only, trials_of
from tunewise.train import EXAMPLE_STATS

log = logging.getLogger("tunewise")


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
            se = (high - low) / (2 * 1.96)  # the bootstrap's percentile interval, read as a normal one
        else:
            common = sorted(set(a.seeds) & set(b.seeds))
            diffs = [a.scores[a.seeds.index(x)] - b.scores[b.seeds.index(x)] for x in common]
            mean, low, high = interval(diffs, (-1.0, 1.0)) if diffs else (a.mean - b.mean, math.nan, math.nan)
            se = float(np.std(diffs, ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else math.nan
        significant, words = verdict(mean, low, high, min(len(a.seeds), len(b.seeds)))
        return {"versus": b.name, "of": a.name, "seeds": [len(a.seeds), len(b.seeds)], "mean": mean,
                "ci_low": low, "ci_high": high, "se": se, "significant": significant, "verdict": words}

    def detectable(self, arm: Arm) -> float | None:
        stats = self.stats(arm)
        return detectable_difference(stats[0], self.metric) if stats else None


def decide(study, run_dir: Path, model: str, data: DataConfig, config: SearchConfig, seconds: float,
           has_test: bool, task, metric: str, metric_reason: str, refused: dict[str, str] | None = None) -> Leaderboard:
    """Arms from seeded runs, intervals, a tie-aware pick, one test evaluation each."""
    trials = [_trial_record(t) for t in study.get_trials(deepcopy=False) if t.user_attrs.get("tier") != "none"]
    judge = Judge(task, metric)
    arms = []
    for best in finalists(study, config.finalists):
        runs = [best, *[t for t in trials_of(study, "final") if t.user_attrs.get("of") == best.number]]
        arms.append(_arm(best.params["strategy"], best.params["lr"], runs))
    scratch_runs = [t for t in trials_of(study, BASELINE_TIER) if t.state == TrialState.COMPLETE]
    if scratch_runs:
        best = max((t for t in scratch_runs if not t.user_attrs.get("seeded")), key=completed_value)
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
    steady = [a for a in arms if a is not scratch and not a.diverged_seeds]
    if not steady and (scratch is None or scratch.diverged_seeds):
        raise TunewiseError(f"every arm of the search in {str(run_dir)!r} diverged on some seed (leaderboard.csv "
                            "says which): their rates are too high for these data. Fit a strategy with a lower --lr "
                            "to see where it trains.")
    winner, pick = pick_winner(steady, scratch if scratch and not scratch.diverged_seeds else None, judge)
    others = [a for a in arms if a is not winner and a is not scratch]
    probe_arm = next((a for a in arms if head_only(a.strategy)), None)
    for arm in {id(a): a for a in (winner, *others[:1], scratch, probe_arm) if a is not None}.values():
        if has_test:
            arm.test = evaluate(arm.run_dirs[0], data, split="test")
    assert config.budget is not None, "search() sets the default budget before any trial"
    board = Leaderboard(
        run_dir=str(run_dir), model=model, data=data.data, metric=metric, budget=config.budget,
        trials=trials, arms=arms, winner=winner.name,
        runner_up=judge.difference(winner, others[0]) if others else None,
        versus_scratch=judge.difference(winner, scratch) if scratch and winner is not scratch else None,
        linear_probe_test=probe_arm.test if probe_arm else None,
        compute=round(sum(t.compute for t in trials), 3), seconds=round(seconds, 1),
        metric_reason=metric_reason, pick=pick, interval_method=judge.method,
        detectable=judge.detectable(winner), unmeasured=unmeasured(trials, config, refused or {}),
        baseline=run_record(winner.run_dirs[0]).baseline, classes=run_record(winner.run_dirs[0]).classes,
        seeds=config.seeds,
    )
    board.warnings = _warnings(board, winner, scratch)
    export_winner(winner, run_dir)
    _remove_unkept_weights(run_dir, arms)
    return board


PICK_RULE = ("the one-standard-error rule (Breiman et al. 1984; Hastie, Tibshirani and Friedman 2009, section "
             "7.10): of the pretrained arms whose mean is within one standard error of the best's (the standard "
             "error of their paired difference), the one with the least training compute; at equal compute, the "
             "best by mean")


def pick_winner(pretrained: list[Arm], scratch: Arm | None, judge: Judge) -> tuple[Arm, dict]:
    """The arm handed back, by a stated rule (PICK_RULE). A cheaper arm replaces the best by mean only
    when the best's lead is within one standard error: a lead that a 95% interval cannot confirm can
    still be the likelier way round (4.7 points at 1.6 standard errors on a Fashion-MNIST subset, where
    the cheaper probe it gave up cost 2.7 test points), and "cheapest within the 95% interval" gave it
    up. At equal compute the best by mean stays (fewer trainable parameters is no reason to give up a
    better mean: the export is a whole model either way). Scratch only when it beat the best
    pretrained arm significantly (or nothing pretrained completed)."""
    if not pretrained:
        assert scratch is not None, "decide() has at least one arm"
        return scratch, {"rule": "no pretrained arm completed without diverging", "best_by_mean": scratch.name,
                         "tied": [], "picked": scratch.name}
    best = pretrained[0]
    if scratch is not None and judge.difference(scratch, best)["significant"] and scratch.mean > best.mean:
        return scratch, {"rule": "scratch beat the best pretrained arm significantly", "best_by_mean": scratch.name,
                         "tied": [], "picked": scratch.name}
    tied = [a for a in pretrained[1:] if _within_one_standard_error(judge.difference(best, a))]
    picked = min([best, *tied], key=lambda a: (round(a.cost, 3), -a.mean))
    return picked, {"rule": PICK_RULE, "best_by_mean": best.name, "tied": [a.name for a in tied],
                    "picked": picked.name}


def _within_one_standard_error(difference: dict[str, Any]) -> bool:
    """The lead (best minus other) is at most one standard error of their paired difference (the
    bootstrap's, or the seeds' for detection: a t-interval's half-width is t times it)."""
    se = difference["se"]
    return math.isfinite(se) and difference["mean"] <= se + 1e-12


def unmeasured(trials: list[TrialRecord], config: SearchConfig, refused: dict[str, str]) -> dict[str, str]:
    """Strategies asked for with no explore epoch run at all, and why (refused by the model, skipped, failed)."""
    missing = {}
    for strategy in config.strategies:
        mine = [t for t in trials if t.tier == "explore" and t.strategy == strategy]
        if not any(t.epochs_run > 0 for t in mine):
            missing[strategy] = refused.get(strategy) or next((t.reason for t in mine if t.reason), "never queued")
    return missing


def _warnings(board: Leaderboard, winner: Arm, scratch: Arm | None) -> list[str]:
    """What a reader must not miss: few seeds, a class never predicted, a model no better than
    always answering the majority class."""
    found = []
    diverged = [t for t in board.trials if t.state == "diverged"]
    if diverged:
        runs = ", ".join(f"{t.tier} {t.strategy} lr {t.lr:.3g} seed {t.seed}" for t in diverged)
        found.append(f"{len(diverged)} run(s) diverged (training loss up tenfold or more) and were passed over as "
                     f"finalists and winner: {runs}")
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


def run_record(run_dir: str) -> RunRecord:
    return RunRecord.load(Path(run_dir) / "record.json")


def _arm(strategy: str, lr: float, runs: list) -> Arm:
    diverged = sorted(t.user_attrs["seed"] for t in runs if "diverged" in t.user_attrs)
    runs = sorted((t for t in runs if t.state == TrialState.COMPLETE), key=lambda t: t.user_attrs["seed"])
    records = [run_record(t.user_attrs["run_dir"]) for t in runs]
    scores = [t.value for t in runs]
    first = runs[0].user_attrs if runs else {}
    return Arm(strategy=strategy, lr=lr, seeds=[t.user_attrs["seed"] for t in runs], scores=scores,
               mean=float(np.mean(scores)) if scores else math.nan, ci_low=math.nan, ci_high=math.nan,
               run_dirs=[t.user_attrs["run_dir"] for t in runs], knobs=first.get("knobs", {}),
               model=first.get("model"), augment=first.get("augment", True),
               cost=float(np.mean([t.user_attrs.get("compute", 0.0) for t in runs])) if runs else 0.0,
               trainable_params=records[0].trainable_params if records else 0,
               val=records[0].val if records else None, diverged_seeds=diverged)


def _trial_record(t: optuna.trial.FrozenTrial) -> TrialRecord:
    run_dir = t.user_attrs.get("run_dir")
    record = RunRecord.load(Path(run_dir) / "record.json") if run_dir else None
    return TrialRecord(
        number=t.number, tier=t.user_attrs.get("tier", "?"), strategy=t.params.get("strategy", "?"),
        lr=t.params.get("lr", math.nan), seed=t.user_attrs.get("seed", 0),
        state=next((s for s in ("skipped", "diverged") if s in t.user_attrs), t.state.name.lower()),
        reason=t.user_attrs.get("skipped") or t.user_attrs.get("diverged") or t.user_attrs.get("reason")
        or ("interrupted; queued again" if t.state == TrialState.FAIL else None),
        epochs_run=record.epochs_run if record else 0,
        compute=t.user_attrs.get("compute", 0.0), seconds=t.user_attrs.get("seconds", 0.0),
        val=max(record.curve) if record and record.curve else None,
        curve=record.curve if record else [], run_dir=run_dir,
        trainable_params=record.trainable_params if record else 0, knobs=t.user_attrs.get("knobs", {}),
        model=t.user_attrs.get("model"), augment=t.user_attrs.get("augment", True),
    )


RUN_STATE = {"checkpoint.pt", "best.pt", "metrics.jsonl", "settings.json"}


def export_winner(winner: Arm, run_dir: Path) -> None:
    """The winner's seed-0 model in run_dir/model, and best.yaml that `tunewise fit --config` reruns."""
    import yaml

    source = Path(winner.run_dirs[0])
    (run_dir / "model").mkdir(exist_ok=True)
    for file in source.iterdir():  # the export: weights, model.json and, for text, config and tokenizer
        if file.is_file() and file.name not in RUN_STATE:
            shutil.copyfile(file, run_dir / "model" / file.name)
    settings = json.loads((source / "settings.json").read_text())
    best = {"model": settings["model"], "weights": settings["weights"],
            "task": settings.get("task", DEFAULT_TASK), "task_knobs": settings.get("task_knobs", {}),
            "strategy": settings["strategy"],
            "knobs": settings["knobs"], "data": settings["data"], "train": settings["train"]}
    text = f"# Reproduce the search's winner: tunewise fit --config {run_dir / 'best.yaml'}\n" + yaml.safe_dump(best)
    write_atomic(run_dir / "best.yaml", lambda tmp: Path(tmp).write_text(text))
