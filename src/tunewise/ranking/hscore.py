"""H-score: how much of the feature covariance the class-conditional means explain.

Bao et al. 2019, "An Information-Theoretic Approach to Transferability in Task Transfer Learning",
https://ieeexplore.ieee.org/document/8803726; with the shrinkage of Ibrahim et al. 2022,
"Newer is not always better: Rethinking transferability metrics", https://arxiv.org/abs/2110.06893
"""

from __future__ import annotations

import numpy as np

from tunewise.ranking._checks import check_inputs
from tunewise.ranking.scorers import scorer


@scorer("hscore")
def hscore(features: np.ndarray, labels: np.ndarray, source_probs: np.ndarray | None = None,
           *, shrinkage: float | None = None) -> float:
    """tr(cov(f)^-1 cov(E[f | y])) with a shrunk cov(f); higher = transfers better, in [0, C - 1].

    Shape: features (N, D) float, labels (N,) int in [0, C), source_probs ignored -> scalar.

    Covariances are the population ones. The raw cov(f) is (nearly) singular once D approaches
    N, and then its smallest, mostly-noise eigenvalues dominate the inverse: the original score
    reaches its maximum C - 1 even for random features. So, as Ibrahim et al., cov(f) is shrunk
    towards a multiple of the identity with the same trace,
        cov_a = (1 - a) cov(f) + a tr(cov(f)) / D I,
    and the score is tr(pinv(cov_a) (1 - a) cov(E[f | y])), which keeps it in [0, C - 1].
    shrinkage=None (default) takes a from the Ledoit-Wolf estimate (the same as
    sklearn.covariance.ledoit_wolf_shrinkage); near 0 when N >> D, near 1 when D >> N.
    shrinkage=0 gives the original H-score of Bao et al.
    """
    features, labels, n_classes = check_inputs(features, labels)
    if shrinkage is not None and not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must lie in [0, 1] or be None (Ledoit-Wolf), got {shrinkage}")
    centred = features - features.mean(axis=0)
    cov_f = centred.T @ centred / len(centred)
    a = ledoit_wolf_shrinkage(centred) if shrinkage is None else shrinkage
    d = cov_f.shape[0]
    cov_a = (1 - a) * cov_f + a * np.trace(cov_f) / d * np.eye(d)
    class_means = np.stack([centred[labels == c].mean(axis=0) for c in range(n_classes)])  # (C, D), centred
    weights = np.bincount(labels) / len(labels)
    # cov(E[f | y]) = sum_c P(c) mu_c mu_c^T, so the trace is a sum of C quadratic forms: no N x D product.
    quadratic = np.sum((class_means @ np.linalg.pinv(cov_a, hermitian=True)) * class_means, axis=1)
    return float((1 - a) * weights @ quadratic)


def ledoit_wolf_shrinkage(centred: np.ndarray) -> float:
    """Ledoit & Wolf (2004) shrinkage intensity towards tr(S) / D I, in [0, 1].

    Shape: centred (N, D) features with column means 0 -> scalar.
    """
    n, d = centred.shape
    cov = centred.T @ centred / n
    target = np.trace(cov) / d
    distance = np.sum(cov**2) - 2 * target * np.trace(cov) + d * target**2  # |S - target I|_F^2
    if distance <= 0:  # S is already a multiple of the identity (or zero): nothing to shrink
        return 0.0
    # Mean of |x_i x_i^T - S|_F^2 over the rows, divided by N: the estimated error of S itself.
    spread = (np.mean(np.sum(centred**2, axis=1) ** 2) - np.sum(cov**2)) / n
    return float(min(max(spread, 0.0), distance) / distance)
