"""Transferability scorers: informative beats random, hand computations, LogME vs a slow reference."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest

from tunewise.ranking import SCORERS, combined_rank, hscore, leep, logme, nce
from tunewise.ranking.hscore import ledoit_wolf_shrinkage
from tunewise.ranking.nce import negative_conditional_entropy

N_CLASSES, PER_CLASS, DIM = 3, 20, 8


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return np.repeat(np.arange(N_CLASSES), PER_CLASS)


def separable(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Class means 10 apart along their own axis, noise 0.1: any scorer should call it easy."""
    rng = np.random.default_rng(seed)
    means = 10.0 * np.eye(N_CLASSES, DIM)
    return means[labels] + 0.1 * rng.normal(size=(len(labels), DIM))


def random_features(labels: np.ndarray, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(len(labels), DIM))


def source_head(labels: np.ndarray, informative: bool, seed: int = 2) -> np.ndarray:
    """Softmax outputs over 5 source classes: peaked on source class = target class, or random."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(labels), 5))
    if informative:
        logits[np.arange(len(labels)), labels] += 6.0
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_separable_features_outscore_random_ones(name, labels):
    score = SCORERS[name]
    needs_head = score.needs_source_head
    good = score(separable(labels), labels, source_head(labels, True) if needs_head else None)
    bad = score(random_features(labels), labels, source_head(labels, False) if needs_head else None)
    assert math.isfinite(good) and math.isfinite(bad)
    assert good > bad


def test_nce_with_a_source_head_prefers_the_informative_one(labels):
    feats = random_features(labels)
    assert nce(feats, labels, source_head(labels, True)) > nce(feats, labels, source_head(labels, False))


def test_scorers_are_deterministic(labels):
    feats = random_features(labels)
    for name in ("nce", "knn", "linear"):
        assert SCORERS[name](feats, labels) == SCORERS[name](feats, labels)


def test_leep_matches_the_formula_by_hand():
    labels = np.array([0, 1, 0])
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    # Joint P(y, z) = sum_i theta_i(z) 1[y_i = y] / 3:
    #   y=0: z0 (0.8 + 0.6) / 3 = 1.4/3, z1 (0.2 + 0.4) / 3 = 0.6/3;  y=1: z0 0.3/3, z1 0.7/3.
    # P(z0) = 1.7/3, P(z1) = 1.3/3, so P(0|z0) = 1.4/1.7, P(1|z0) = 0.3/1.7, P(0|z1) = 0.6/1.3, P(1|z1) = 0.7/1.3.
    by_hand = np.mean([
        math.log(0.8 * 1.4 / 1.7 + 0.2 * 0.6 / 1.3),  # example 0, y = 0
        math.log(0.3 * 0.3 / 1.7 + 0.7 * 0.7 / 1.3),  # example 1, y = 1
        math.log(0.6 * 1.4 / 1.7 + 0.4 * 0.6 / 1.3),  # example 2, y = 0
    ])
    assert leep(np.zeros((3, 4)), labels, probs) == pytest.approx(by_hand, rel=1e-12)


def test_leep_tolerates_a_source_class_without_mass():
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.5, 0.5, 0.0]])
    assert math.isfinite(leep(np.zeros((3, 1)), np.array([0, 1, 1]), probs))


def test_nce_by_hand():
    y = np.array([0, 0, 1, 1])
    assert negative_conditional_entropy(y, np.array([0, 0, 1, 1])) == pytest.approx(0.0, abs=1e-15)
    assert negative_conditional_entropy(y, np.array([1, 1, 0, 0])) == pytest.approx(0.0, abs=1e-15)
    assert negative_conditional_entropy(y, np.array([0, 1, 0, 1])) == pytest.approx(-math.log(2))  # -H(Y)
    # z=0 holds {0, 0}: H = 0; z=1 holds {0, 1}: H = log 2; each with P(z) = 1/2.
    assert negative_conditional_entropy(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1])) == pytest.approx(
        -0.5 * math.log(2))


def test_nce_reads_source_labels_from_the_argmax_of_source_probs():
    y = np.array([0, 0, 0, 1])
    probs = np.array([[0.7, 0.3], [0.6, 0.4], [0.2, 0.8], [0.1, 0.9]])  # argmax 0, 0, 1, 1
    assert nce(np.zeros((4, 2)), y, probs) == pytest.approx(-0.5 * math.log(2))


def test_hscore_by_hand():
    # Centred rows (-3, 1), (-1, -1), (1, -1), (3, 1); class means (-2, 0) and (2, 0).
    # Population cov(f) = diag(5, 1), cov(E[f|y]) = diag(4, 0), tr / D = 3.
    feats = np.array([[0.0, 1.0], [2.0, -1.0], [4.0, -1.0], [6.0, 1.0]])
    y = np.array([0, 0, 1, 1])
    assert hscore(feats, y, shrinkage=0.0) == pytest.approx(4 / 5)  # Bao et al.
    a = 0.1  # (1 - a) * 4 / ((1 - a) * 5 + a * 3)
    assert hscore(feats, y, shrinkage=a) == pytest.approx(0.9 * 4 / (0.9 * 5 + 0.3))
    # Ledoit-Wolf: |S - 3 I|_F^2 = 8; mean |x_i|^4 = (100 + 4 + 4 + 100) / 4 = 52, |S|_F^2 = 26,
    # so the spread is (52 - 26) / 4 = 6.5 and a = 6.5 / 8 = 0.8125: H = 0.1875 * 4 / (0.1875 * 5 + 0.8125 * 3).
    assert ledoit_wolf_shrinkage(feats - feats.mean(axis=0)) == pytest.approx(0.8125)
    assert hscore(feats, y) == pytest.approx(2 / 9)


def test_ledoit_wolf_matches_scikit_learn():
    from sklearn.covariance import ledoit_wolf_shrinkage as reference

    rng = np.random.default_rng(0)
    for feats in (rng.normal(size=(60, 8)), rng.normal(size=(20, 50)) * np.arange(1, 51)):
        assert ledoit_wolf_shrinkage(feats - feats.mean(axis=0)) == pytest.approx(reference(feats), rel=1e-10)


def test_hscore_is_finite_and_bounded_with_more_dimensions_than_examples(labels):
    feats = np.random.default_rng(0).normal(size=(len(labels), 200))
    feats[:, :N_CLASSES] += 3 * np.eye(N_CLASSES)[labels]
    for shrinkage in (None, 1e-3, 0.5, 1.0):
        assert 0.0 <= hscore(feats, labels, shrinkage=shrinkage) <= N_CLASSES - 1 + 1e-9
    assert hscore(feats, labels) > hscore(feats[:, N_CLASSES:], labels)  # the shrunk score still sees the signal


def slow_logme(features: np.ndarray, labels: np.ndarray) -> float:
    """The same fixed-point iteration and evidence with explicit D x D matrices: no SVD."""
    n, d = features.shape
    gram = features.T @ features
    evidences = []
    for c in np.unique(labels):
        y = (labels == c).astype(float)
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            t = alpha / beta
            a_inv = np.linalg.inv(alpha * np.eye(d) + beta * gram)
            gamma = d - alpha * np.trace(a_inv)  # sum_j beta s_j / (alpha + beta s_j)
            m = beta * a_inv @ features.T @ y
            m2, res2 = m @ m, np.sum((features @ m - y) ** 2)
            alpha, beta = gamma / (m2 + 1e-5), (n - gamma) / (res2 + 1e-5)
            if abs(alpha / beta - t) / t <= 1e-3:
                break
        _, log_det = np.linalg.slogdet(alpha * np.eye(d) + beta * gram)
        evidence = (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - 0.5 * log_det - beta / 2 * res2
                    - alpha / 2 * m2 - n / 2 * math.log(2 * math.pi))
        evidences.append(evidence / n)
    return float(np.mean(evidences))


@pytest.mark.parametrize(("n", "d"), [(40, 6), (12, 30), (30, 30)])
def test_logme_equals_the_slow_reference(n, d):
    rng = np.random.default_rng(n + d)
    y = rng.integers(0, 3, n)
    feats = rng.normal(size=(n, d)) + y[:, None] * 0.5
    assert logme(feats, y) == pytest.approx(slow_logme(feats, y), rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("case", ["zeros", "constant", "one_nonzero", "duplicates", "wide", "tiny", "large", "two"])
def test_logme_is_finite_for_degenerate_features(case, labels):
    rng = np.random.default_rng(0)
    n = len(labels)
    feats = {
        "zeros": np.zeros((n, DIM)),
        "constant": np.full((n, DIM), 3.0),
        "one_nonzero": np.r_[[np.ones(DIM)], np.zeros((n - 1, DIM))],
        "duplicates": np.repeat(rng.normal(size=(1, DIM)), n, axis=0),
        "wide": rng.normal(size=(n, 500)),
        "tiny": 1e-12 * rng.normal(size=(n, DIM)),
        "large": 1e6 * rng.normal(size=(n, DIM)),
        "two": None,
    }[case]
    if case == "two":
        assert math.isfinite(logme(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1])))
    else:
        assert math.isfinite(logme(feats, labels))


def test_logme_prefers_more_informative_features(labels):
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(len(labels), DIM))
    scores = [logme(np.eye(N_CLASSES, DIM)[labels] * signal + noise, labels) for signal in (0.0, 1.0, 3.0)]
    assert scores[0] < scores[1] < scores[2]


def test_labels_with_gaps_score_like_contiguous_ones(labels):
    feats = separable(labels)
    for name in ("logme", "hscore", "nce", "knn"):
        assert SCORERS[name](feats, labels * 2 + 1) == pytest.approx(SCORERS[name](feats, labels))


def test_combined_rank_orders_models_and_skips_nan():
    scores = {
        "a": {"m1": 1.0, "m2": 2.0, "m3": 3.0},
        "b": {"m1": -5.0, "m2": float("nan"), "m3": 7.0},
        "c": {"m1": 0.0, "m3": 0.0},  # a tie: both get the middle position 0.5
        "d": {"m2": 9.0},  # a single model: no ranking information, skipped
    }
    combined = combined_rank(scores)
    assert list(combined) == ["m3", "m2", "m1"]
    assert combined["m3"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert combined["m2"] == pytest.approx(0.5)
    assert combined["m1"] == pytest.approx((0 + 0 + 0.5) / 3)


def test_combined_rank_gives_nan_to_a_model_nobody_placed():
    combined = combined_rank({"a": {"m1": 1.0, "m2": 2.0, "m3": float("nan")}})
    assert list(combined)[:2] == ["m2", "m1"]
    assert math.isnan(combined["m3"])
    assert combined_rank({}) == {}


@pytest.mark.parametrize("name", sorted(SCORERS))
@pytest.mark.parametrize(
    ("features", "labels", "message"),
    [
        (np.zeros(6), np.array([0, 1, 0, 1, 0, 1]), "2-D"),
        (np.full((6, 2), np.nan), np.array([0, 1, 0, 1, 0, 1]), "finite"),
        (np.zeros((6, 2)), np.array([0, 1, 0, 1, 0]), "entries"),
        (np.zeros((6, 2)), np.zeros((6, 1), dtype=int), "1-D"),
        (np.zeros((6, 2)), np.zeros(6, dtype=int), "at least 2 classes"),
        (np.zeros((6, 2)), np.array([0, 1, 0, 1, 0, -1]), "negative"),
        (np.zeros((6, 2)), np.array([0, 1, 0, 1, 0, 0.5]), "integer"),
    ],
)
def test_bad_inputs_raise_value_error(name, features, labels, message):
    probs = np.full((len(labels), 2), 0.5) if SCORERS[name].needs_source_head else None
    with pytest.raises(ValueError, match=message):
        SCORERS[name](features, labels, probs)


def test_leep_needs_proper_source_probs(labels):
    feats = separable(labels)
    with pytest.raises(ValueError, match="source_probs"):
        leep(feats, labels)
    with pytest.raises(ValueError, match="shape"):
        leep(feats, labels, np.full((len(labels) - 1, 2), 0.5))
    with pytest.raises(ValueError, match="softmax"):
        leep(feats, labels, np.random.default_rng(0).normal(size=(len(labels), 4)))


@pytest.mark.parametrize("classes", [2, 3])  # two: a single-column coding once scored 1.0 for anything
def test_linear_is_the_leave_one_out_accuracy_of_refitting_without_each_example(classes, monkeypatch):
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    linear_module = importlib.import_module("tunewise.ranking.linear")  # the module, not the function
    monkeypatch.setattr(linear_module, "ALPHAS", (3.0,))
    labels = np.repeat(np.arange(classes), PER_CLASS)
    feats = random_features(labels) + 0.08 * 10.0 * np.eye(classes, DIM)[labels]  # some, not all, right
    standardised = StandardScaler().fit_transform(feats)
    coded = 2 * np.eye(classes)[labels] - 1
    right = [Ridge(alpha=3.0).fit(np.delete(standardised, i, 0), np.delete(coded, i, 0))
             .predict(standardised[i:i + 1]).argmax() == labels[i] for i in range(len(labels))]
    assert 0 < np.mean(right) < 1
    assert linear_module.linear(feats, labels) == pytest.approx(np.mean(right), abs=1e-12)


def test_linear_scores_random_binary_features_near_chance():
    labels = np.repeat([0, 1], 100)
    assert 0.3 < SCORERS["linear"](np.random.default_rng(0).normal(size=(200, 50)), labels) < 0.7


def test_linear_needs_two_examples_per_class():
    with pytest.raises(ValueError, match="at least 2 examples"):
        SCORERS["linear"](np.eye(5), np.array([0, 0, 1, 1, 2]))


def test_hscore_rejects_shrinkage_out_of_range(labels):
    with pytest.raises(ValueError, match="shrinkage"):
        hscore(separable(labels), labels, shrinkage=1.5)
