"""LogME: the log maximum evidence of a Bayesian linear model from features to one-hot labels.

You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
https://arxiv.org/abs/2102.11005; the fixed-point, SVD-based algorithm follows the official code
(https://github.com/thuml/LogME, `_fit_fixed_point`).
"""

from __future__ import annotations

import numpy as np

from tunewise.ranking._checks import check_inputs
from tunewise.ranking.scorers import scorer

EPSILON = 1e-5  # the official code's guard in the alpha and beta denominators
MAX_STEPS = 11  # as the official code: converges in 2-3 steps, 10 at most
TOLERANCE = 1e-3  # relative change of alpha / beta that stops the iteration
TINY = np.finfo(np.float64).tiny  # floor for alpha and beta so that log() stays finite


@scorer("logme")
def logme(features: np.ndarray, labels: np.ndarray, source_probs: np.ndarray | None = None) -> float:
    """Mean over classes of the maximum log evidence per example; higher = transfers better.

    Shape: features (N, D) float, labels (N,) int in [0, C), source_probs ignored -> scalar.

    For each class c, target y = 1[labels == c] and the model y = F w + noise, w ~ N(0, 1/alpha),
    noise ~ N(0, 1/beta). alpha and beta are set by MacKay's fixed-point iteration, then the
    log evidence log p(y | F, alpha, beta) is divided by N (as the official code) and averaged
    over the classes present: a log-likelihood per example, so only differences between
    candidates on the same data mean anything.

    One deviation from the official code: log|A| counts all D eigenvalues of
    A = alpha I + beta F^T F, including the D - rank(F) that equal alpha. The official code drops
    those, which changes the score when D > N or F is rank-deficient; with full-rank features
    (N > D) both agree. Always finite, also for constant or zero features.
    """
    features, labels, n_classes = check_inputs(features, labels)
    u, sigma = _left_singular(features)
    evidences = [_class_evidence(u, sigma, (labels == c).astype(np.float64)) for c in range(n_classes)]
    return float(np.mean(evidences))


def _left_singular(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left singular vectors and squared singular values of the features, zero ones dropped.

    Shape: features (N, D) -> u (N, k), sigma (k,), k = rank.
    """
    n, d = features.shape
    if n > d:  # the D x D Gram matrix is cheaper to decompose than F itself
        sigma, v = np.linalg.eigh(features.T @ features)
        sigma = np.clip(sigma, 0.0, None)
        u_times_s = features @ v
    else:
        u, s, _ = np.linalg.svd(features, full_matrices=False)
        sigma, u_times_s = s**2, u * s
    # Eigenvalues of the Gram matrix are only accurate to about eps * largest: smaller ones are noise,
    # and dividing by their square root would break the orthonormality of u. Same cut-off on both paths.
    keep = sigma > sigma.max(initial=0.0) * max(n, d) * np.finfo(np.float64).eps
    return u_times_s[:, keep] / np.sqrt(sigma[keep]), sigma[keep]


def _class_evidence(u: np.ndarray, sigma: np.ndarray, y: np.ndarray) -> float:
    """Maximum log evidence / N of one target column, by the fixed-point iteration.

    Shape: u (N, k), sigma (k,), y (N,) -> scalar.
    """
    n = y.shape[0]
    x2 = (u.T @ y) ** 2
    res_x2 = max(float(y @ y - x2.sum()), 0.0)  # the part of y outside the span of the features
    alpha, beta = 1.0, 1.0
    for _ in range(MAX_STEPS):
        t = alpha / beta
        gamma = float(np.sum(sigma / (sigma + t)))  # effective number of parameters
        m2 = float(np.sum(sigma * x2 / (t + sigma) ** 2))  # |m|^2, m the posterior mean of w
        res2 = float(np.sum(x2 / (1 + sigma / t) ** 2)) + res_x2  # |F m - y|^2
        alpha = max(gamma / (m2 + EPSILON), TINY)
        beta = max((n - gamma) / (res2 + EPSILON), TINY)
        if abs(alpha / beta - t) / t <= TOLERANCE:
            break
    # D/2 log(alpha) - 1/2 log|A| written as one sum over the non-zero eigenvalues: exact, and it
    # stays finite when alpha is tiny or F has no non-zero singular value.
    log_det_ratio = float(np.sum(np.log1p(beta * sigma / alpha)))
    evidence = (n / 2 * np.log(beta) - 0.5 * log_det_ratio - beta / 2 * res2 - alpha / 2 * m2
                - n / 2 * np.log(2 * np.pi))
    return evidence / n
