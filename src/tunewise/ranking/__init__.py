"""Transferability scorers: rank candidate pretrained models for a data set before fine-tuning.

Every scorer is a pure numpy function with one signature:

    score(features, labels, source_probs=None) -> float

Shape: features (N, D) float, one row per example, extracted once per candidate; labels (N,) int
in [0, C); source_probs (N, K) the softmax of the candidate's own source classifier, or None.
Higher = the candidate is predicted to transfer better. Scores are comparable between
candidates on the same data, not between scorers or data sets: `combined_rank` merges scorers
by rank.

    from tunewise.ranking import SCORERS, combined_rank
    scores = {name: {model: score(feats[model], labels, probs.get(model))
                     for model in feats if not score.needs_source_head or model in probs}
              for name, score in SCORERS.items()}
    print(combined_rank(scores))

Bad inputs raise ValueError (tunewise.errors.DataError) with the reason.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from typing import Any

import numpy as np

from tunewise.ranking.hscore import hscore
from tunewise.ranking.knn import knn
from tunewise.ranking.leep import leep
from tunewise.ranking.linear import linear
from tunewise.ranking.logme import logme
from tunewise.ranking.nce import nce
from tunewise.ranking.scorers import SCORERS, scorer

__all__ = ["SCORERS", "combined_rank", "hscore", "knn", "leep", "linear", "logme", "nce", "scorer"]

# A new scorer is one module in this package that registers itself with @scorer: import them all.
for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "ranker":
        importlib.import_module(f"{__name__}.{_module.name}")


def combined_rank(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """Merge scorers by rank: each model's mean rank-normalised position, from 0 (worst) to 1 (best).

    Shape: scores[scorer][model] -> {model: combined score}, best model first.

    Within each scorer, the models with a finite score are ranked (ties share their average
    rank) and the rank is scaled to [0, 1]: 0 for the lowest score, 1 for the highest. A model's
    combined score is the mean of those positions over the scorers that scored it. NaN, inf and
    missing scores are skipped, and so is a scorer that scored fewer than two models (its
    position would mean nothing). A model that no scorer placed gets NaN and comes last.
    Ranks, not raw values, because the scorers' scales differ (log evidence, accuracy, nats).
    """
    from scipy.stats import rankdata

    positions: dict[str, list[float]] = {model: [] for by_model in scores.values() for model in by_model}
    for by_model in scores.values():
        scored = {model: float(value) for model, value in by_model.items() if _finite(value)}
        if len(scored) < 2:
            continue
        ranks = rankdata(list(scored.values()))  # 1 = lowest, ties averaged
        for model, rank in zip(scored, ranks, strict=True):
            positions[model].append((rank - 1) / (len(scored) - 1))
    combined = {model: float(np.mean(p)) if p else math.nan for model, p in positions.items()}
    return dict(sorted(combined.items(), key=lambda item: -item[1] if _finite(item[1]) else math.inf))


def _finite(value: Any) -> bool:
    """Whether `value` converts to a finite float (anything else: False)."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
