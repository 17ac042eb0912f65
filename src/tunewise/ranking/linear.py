"""Linear probe: cross-validated accuracy of logistic regression on the features."""

from __future__ import annotations

import warnings

import numpy as np

from tunewise.errors import DataError
from tunewise.ranking._checks import check_inputs

MAX_FOLDS = 5
SEED = 0
MAX_ITER = 2000


def linear(features: np.ndarray, labels: np.ndarray, source_probs: np.ndarray | None = None) -> float:
    """Mean held-out accuracy of a linear probe; higher = transfers better, in [0, 1].

    Shape: features (N, D) float, labels (N,) int in [0, C), source_probs ignored -> scalar.

    Stratified k-fold with k = min(5, smallest class count), shuffled with seed 0; in each fold
    the features are standardised on the training part and a multinomial logistic regression
    (L2, scikit-learn defaults, lbfgs) is fitted. The slowest scorer, but the closest to what a
    linear probe will reach.

    Raises:
        ValueError: also when a class has a single example (no stratified split can hold it out).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels, _ = check_inputs(features, labels)
    folds = min(MAX_FOLDS, int(np.bincount(labels).min()))
    if folds < 2:
        raise DataError("linear probe needs at least 2 examples of every class for a held-out split")
    accuracies = []
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=SEED).split(features, labels):
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=MAX_ITER))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # an unconverged probe still has an accuracy
            probe.fit(features[train], labels[train])
        accuracies.append(probe.score(features[test], labels[test]))
    return float(np.mean(accuracies))

