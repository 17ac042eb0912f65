"""Intervals that carry both sources of noise in a validation result: the seed (initialisation,
shuffling, augmentation) and the validation set itself (which examples happened to be drawn).

A search's arm is a matrix of results: seeds x validation examples, crossed (every seed is
scored on the same examples). The pigeonhole bootstrap resamples both axes independently,
seeds with replacement and examples with replacement, and recomputes the metric on each draw
(Owen 2007, "The pigeonhole bootstrap", Annals of Applied Statistics 1(2),
https://arxiv.org/abs/0712.1111; it is mildly conservative for crossed designs). Bouthillier et
al. 2021, "Accounting for Variance in Machine Learning Benchmarks" (MLSys,
https://arxiv.org/abs/2103.03098), show that leaving out the data-sampling source, as a t-interval
over a few seeds does, makes intervals too narrow; with two seeds a t-interval is also
degenerate (a zero-width or a [-31, 111] points interval were both seen).

Differences between two arms resample the same examples for both (paired over examples: the
shared difficulty of an example cancels) and each arm's seeds on their own (seed k of one
strategy has nothing in common with seed k of another). Percentile intervals of a metric
computed on resampled examples stay inside the metric's range.

Every function here is pure numpy: `metric` maps an (N, K) array of per-example statistics to
a number (a task's `metric_from_stats`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Metric = Callable[[np.ndarray], float]
REPLICATES = 2000
Z_TWO_SIDED_95 = 1.959964
Z_POWER_80 = 0.841621


def _replicates(seeds: Sequence[np.ndarray], metric: Metric, rows: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """One value per replicate: the mean over that replicate's seeds of the metric on its examples.

    Shape: rows (R, N) example indices, picks (R, S) seed indices -> (R,).
    """
    per_seed = np.array([[metric(stats[r]) for stats in seeds] for r in rows])  # (R, S)
    means: np.ndarray = np.take_along_axis(per_seed, picks, axis=1).mean(axis=1)  # numpy types mean() as Any
    return means


def _draws(rng: np.random.Generator, examples: int, replicates: int) -> np.ndarray:
    return rng.integers(0, examples, size=(replicates, examples))


def mean_interval(seeds: Sequence[np.ndarray], metric: Metric, replicates: int = REPLICATES,
                  seed: int = 0) -> tuple[float, float, float]:
    """An arm's mean metric over its seeds and the 95% pigeonhole-bootstrap interval.

    Args:
        seeds: each seed's per-example statistics on the same validation examples, in the same order.
        metric: the selection metric from statistics.

    Returns:
        (mean, low, high); with one seed the interval carries the examples' noise alone.

    Shape: seeds S arrays of (N, K).
    """
    rng = np.random.default_rng(seed)
    mean = float(np.mean([metric(s) for s in seeds]))
    rows = _draws(rng, len(seeds[0]), replicates)
    values = _replicates(seeds, metric, rows, rng.integers(0, len(seeds), size=(replicates, len(seeds))))
    low, high = np.percentile(values, [2.5, 97.5])
    floor_low, floor_high = wilson(mean, len(seeds[0]))
    return mean, float(min(low, floor_low)), float(max(high, floor_high))


def wilson(p: float, n: int) -> tuple[float, float]:
    """The Wilson score 95% interval of a proportion `p` seen on `n` examples (Wilson 1927; Brown,
    Cai and DasGupta 2001 recommend it for small n). The percentile bootstrap collapses at the
    metric's edges (every resample of 9 right answers out of 9 is 100%); an arm's interval is never
    narrower than this one."""
    z = Z_TWO_SIDED_95
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def difference_interval(a: Sequence[np.ndarray], b: Sequence[np.ndarray], metric: Metric,
                        replicates: int = REPLICATES, seed: int = 0) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its 95% interval: examples resampled together for both arms (paired),
    each arm's seeds resampled on their own.

    Shape: a, b: lists of (N, K) per-example statistics on the same N examples.
    """
    if len(a[0]) != len(b[0]):
        raise ValueError(f"the two arms were scored on different validation sets ({len(a[0])} and {len(b[0])} "
                         "examples)")
    rng = np.random.default_rng(seed)
    mean = float(np.mean([metric(s) for s in a]) - np.mean([metric(s) for s in b]))
    rows = _draws(rng, len(a[0]), replicates)
    picks_a = rng.integers(0, len(a), size=(replicates, len(a)))
    picks_b = rng.integers(0, len(b), size=(replicates, len(b)))
    values = _replicates(a, metric, rows, picks_a) - _replicates(b, metric, rows, picks_b)
    low, high = np.percentile(values, [2.5, 97.5])
    return mean, float(low), float(high)


def detectable_difference(stats: np.ndarray, metric: Metric, replicates: int = 500, seed: int = 0) -> float:
    """The smallest difference between two models this validation set could detect: with 80%
    power at the 5% level, two independent estimates each with this set's bootstrap standard
    error `se` differ detectably by (z_0.975 + z_0.8) * sqrt(2) * se (a paired comparison on
    the same examples can do better; this is the conservative figure).
    The standard error is at least a proportion's at one example from the edge, sqrt(q(1 - q)/N)
    with q = 1/N: a perfect score on few examples claims no precision it does not have.

    Shape: stats (N, K) one model's per-example statistics.
    """
    rng = np.random.default_rng(seed)
    values = [metric(stats[rows]) for rows in _draws(rng, len(stats), replicates)]
    edge = 1 / len(stats)
    se = max(float(np.std(values, ddof=1)), float(np.sqrt(edge * (1 - edge) / len(stats))))
    return float((Z_TWO_SIDED_95 + Z_POWER_80) * np.sqrt(2) * se)


def verdict(mean: float, low: float, high: float, seeds: int) -> tuple[bool, str]:
    """Whether a difference is significant, and the plain words for it.

    Significant only with at least two seeds on each side (one seed says nothing of the seed's
    own noise) and an interval of non-zero width that excludes zero.
    """
    if seeds < 2:
        return False, "cannot tell: one seed shows nothing of the variation between seeds"
    if not high > low:
        return False, "cannot tell: the interval has no width"
    if low > 0 or high < 0:
        return True, "significant at 95%"
    return False, "cannot tell apart at 95%"
