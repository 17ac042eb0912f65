"""Plain result records that round-trip through JSON: search, ranking and reports pass these."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tunewise.config import BASELINE_STRATEGY
from tunewise.io import write_json

GENERATIONS = "generations.json"
"""A generator run's scored greedy generations, beside its model (written by fit)."""
BASE_GENERATIONS = "base_generations.json"
"""The base model's, on the same prompts, in a generator search's folder (written by the causal_lm task)."""


@dataclass
class RunRecord:
    """What one fit() produced; `record.json` in its run folder."""

    run_dir: str
    model: str
    arch: str
    strategy: str
    task: str
    data: str
    classes: list[str]
    metric: str
    best_epoch: int
    """0-based index of the kept epoch."""
    epochs_run: int
    val: dict[str, Any]
    test: dict[str, Any] | None
    seconds: float
    trainable_params: int
    total_params: int
    train_config: dict[str, Any] = field(default_factory=dict)
    data_config: dict[str, Any] = field(default_factory=dict)
    strategy_knobs: dict[str, Any] = field(default_factory=dict)
    cached_features: bool = False
    stopped: str | None = None
    """Why training ended before its last epoch: "patience", "pruned", or None."""
    curve: list[float] = field(default_factory=list)
    """The validation metric after each epoch."""
    compute: float = 0.0
    """Cost in training-epoch equivalents: epochs that trained through the backbone; a run on
    cached features counts 1/3 (one forward pass over the data instead of forward and backward);
    a warm start's probe (LP-FT's) adds its own."""
    processes: int = 1
    """Data-parallel processes that trained it (accelerate launch / torchrun)."""
    metric_reason: str = ""
    """Why `metric` selects: asked for, or the task's choice for these data."""
    baseline: dict[str, Any] | None = None
    """The majority class of training always predicted, scored on validation (classification)."""
    start_val: float | None = None
    """The selection metric before the first epoch, for runs that start from a trained head (LP-FT)."""
    second_metric: str | None = None
    """The metric the task shows beside `metric` (reports)."""
    diverged: str | None = None
    """Why the run counts as diverged (its training loss rose tenfold or more: `train.divergence`), or
    None. Its model is exported, but a search never takes it as a finalist or a winner."""

    @property
    def val_score(self) -> float:
        return float(self.val[self.metric])

    def save(self, path: str | Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> RunRecord:
        raw = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass
class TrialRecord:
    """One run of a search: a strategy at a rate and seed, in one tier."""

    number: int
    tier: str
    """explore, final or scratch."""
    strategy: str
    lr: float
    seed: int
    state: str
    """complete, pruned, fail, diverged (its training loss rose tenfold: never a finalist or a winner),
    or skipped (the budget ran out before it)."""
    reason: str | None
    """Why it was pruned or failed."""
    epochs_run: int
    compute: float
    seconds: float
    val: float | None
    """Best validation metric."""
    curve: list[float]
    run_dir: str | None
    trainable_params: int = 0
    knobs: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    augment: bool = True


@dataclass
class Arm:
    """A strategy at its chosen rate, run over seeds: the unit the decision compares."""

    strategy: str
    lr: float
    seeds: list[int]
    scores: list[float]
    """Best validation metric of each seed's run."""
    mean: float
    ci_low: float
    ci_high: float
    """The 95% interval of the mean: seeds and validation examples resampled (Leaderboard.interval_method)."""
    run_dirs: list[str]
    knobs: dict[str, Any] = field(default_factory=dict)
    """The strategy's knobs where the search chose them (--search-knobs); empty: its defaults."""
    model: str | None = None
    """The backbone, when the search compared several; None: the leaderboard's model."""
    test: dict[str, Any] | None = None
    """Test metrics of the seed-0 model, evaluated once after the decision (the winner, the best
    pretrained arm, scratch and linear_probe)."""
    augment: bool = True
    """Whether its runs trained with augmentation (the search also tries the best arm without)."""
    cost: float = 0.0
    """Mean training compute of one run, in epoch equivalents: what the tie-aware pick minimises."""
    trainable_params: int = 0
    val: dict[str, Any] | None = None
    """All validation metrics of the seed-0 run (confusion matrix, per-class recall and F1)."""
    diverged_seeds: list[int] = field(default_factory=list)
    """Seeds whose run diverged (not among `seeds`): such an arm is never the winner."""

    @property
    def name(self) -> str:
        """The strategy, and the model when a search compared several: what the winner is called."""
        on_model = self.model and self.strategy != BASELINE_STRATEGY
        name = f"{self.strategy} on {self.model}" if on_model else self.strategy
        return name if self.augment else f"{name} (no augmentation)"


@dataclass
class Leaderboard:
    """What a search found; `leaderboard.json` in its run folder. Reports read only this."""

    run_dir: str
    model: str
    data: str
    metric: str
    budget: str
    trials: list[TrialRecord]
    arms: list[Arm]
    """Best first, the scratch baseline among them."""
    winner: str
    runner_up: dict[str, Any] | None
    """Winner minus the best other pretrained arm: mean, ci_low, ci_high, significant, verdict."""
    versus_scratch: dict[str, Any] | None
    """Winner minus scratch, the same way: is pretraining worth it here?"""
    linear_probe_test: dict[str, Any] | None
    compute: float
    seconds: float
    metric_reason: str = ""
    """Why `metric` selects (imbalanced classes select on macro-F1)."""
    pick: dict[str, Any] = field(default_factory=dict)
    """How the winner was picked: rule, best_by_mean, tied (arms within one standard error of the best), picked."""
    interval_method: str = ""
    detectable: float | None = None
    """The smallest difference in `metric` this validation set could detect (80% power, 5% level)."""
    unmeasured: dict[str, Any] = field(default_factory=dict)
    """Strategies asked for that ran no epoch, and why."""
    baseline: dict[str, Any] | None = None
    """The majority class of training always predicted, scored on validation (classification)."""
    classes: list[str] = field(default_factory=list)
    seeds: int = 3
    warnings: list[str] = field(default_factory=list)

    def save(self, path: str | Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> Leaderboard:
        raw = json.loads(Path(path).read_text())
        raw["trials"] = [TrialRecord(**t) for t in raw["trials"]]
        raw["arms"] = [Arm(**a) for a in raw["arms"]]
        return cls(**raw)

    def csv(self) -> str:
        """One row per trial."""
        buffer = io.StringIO()
        columns = ["number", "tier", "strategy", "lr", "seed", "state", "val", "epochs_run", "compute",
                   "seconds", "reason", "run_dir"]
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for trial in self.trials:
            writer.writerow(asdict(trial))
        return buffer.getvalue()


@dataclass
class Candidate:
    """One model of a ranking: its scores, or why it could not be scored."""

    model: str
    scores: dict[str, float] = field(default_factory=dict)
    """Scorer name -> score (higher: predicted to transfer better); NaN where a scorer does not apply."""
    combined: float = math.nan
    """Mean rank-normalised position over the scorers, 0 (worst) to 1 (best)."""
    feature_seconds: float = 0.0
    """Time to extract its features (0 when read from the cache)."""
    score_seconds: float = 0.0
    error: str | None = None
    finetuned: float | None = None
    """The validation metric of its short fine-tune, for the candidates `--verify` checked."""
    finetune_seconds: float | None = None
    run_dir: str | None = None


@dataclass
class Ranking:
    """What `tunewise rank` found; `ranking.json` in its folder."""

    run_dir: str
    data: str
    task: str
    metric: str
    examples: int
    """Training examples the scorers saw."""
    candidates: list[Candidate]
    """Best combined score first; candidates that failed last."""
    kendall_tau: float | None = None
    """Kendall's tau between the combined score and the fine-tuned metric (--verify)."""
    weighted_tau: float | None = None
    """The same, weighted towards the top of the ranking (scipy's weightedtau)."""
    scorer_taus: dict[str, float | None] = field(default_factory=dict)
    """Kendall's tau of each scorer alone against the fine-tuned metric; None where it is undefined (NaN)."""

    def save(self, path: str | Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> Ranking:
        raw = json.loads(Path(path).read_text())
        raw["candidates"] = [Candidate(**c) for c in raw["candidates"]]
        return cls(**raw)
