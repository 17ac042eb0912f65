"""Linear probe: leave-one-out accuracy of a ridge classifier on the features, in closed form."""

from __future__ import annotations

import numpy as np

from tunewise.errors import DataError
from tunewise.ranking._checks import check_inputs
from tunewise.ranking.scorers import scorer

ALPHAS = tuple(np.logspace(-2, 4, 7))  # ridge penalties tried; the best leave-one-out accuracy counts


@scorer("linear")
def linear(features: np.ndarray, labels: np.ndarray, source_probs: np.ndarray | None = None) -> float:
    """Leave-one-out accuracy of a linear probe; higher = transfers better, in [0, 1].

    Shape: features (N, D) float, labels (N,) int in [0, C), source_probs ignored -> scalar.

    The features are standardised, then a ridge classifier (one-vs-all least squares on the
    labels coded -1/+1 in one column per class, the highest column wins) predicts every example
    from a fit on all the others. Leave-one-out needs no refits for ridge: scikit-learn's
    RidgeCV gives the exact held-out predictions from one decomposition, so this costs about
    one fit per penalty instead of k logistic fits, and there is no random split. The best
    accuracy over ALPHAS is returned, the same search for every candidate. (Not
    RidgeClassifierCV's own score: with two classes it codes a single column, and its
    leave-one-out accuracy then comes out 1.0 whatever the features.)

    Raises:
        ValueError: also when a class has a single example (held out, it could never be right).
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    features, labels, _ = check_inputs(features, labels)
    if np.bincount(labels).min() < 2:
        raise DataError("linear probe needs at least 2 examples of every class for a held-out prediction")
    standardised = StandardScaler().fit_transform(features)
    coded = 2 * np.eye(int(labels.max()) + 1)[labels] - 1  # (N, C) in {-1, +1}
    probe = RidgeCV(alphas=np.array(ALPHAS), scoring="neg_mean_squared_error", store_cv_results=True)
    held_out = probe.fit(standardised, coded).cv_results_  # (N, C, len(ALPHAS)): each row predicted without itself
    return float((held_out.argmax(1) == labels[:, None]).mean(0).max())
