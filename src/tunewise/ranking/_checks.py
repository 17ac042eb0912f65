"""Input checks shared by the scorers: one clear ValueError instead of a NaN score later."""

from __future__ import annotations

import numpy as np

from tunewise.errors import DataError


def check_inputs(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate features and labels; return float64 features, labels renumbered 0..C-1, and C.

    Shape: features (N, D), labels (N,) -> (N, D) float64, (N,) int64, C = number of classes present.

    Labels are renumbered to the classes present so that an unused label id cannot add an empty
    class to any scorer.

    Raises:
        DataError (a ValueError): features not 2-D or not finite, labels not 1-D integers >= 0,
            different N, or fewer than two classes.
    """
    features = np.asarray(features)
    labels = np.asarray(labels)
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise DataError(f"features must be a non-empty 2-D array (N, D), got shape {features.shape}")
    if not np.issubdtype(features.dtype, np.number) or not np.all(np.isfinite(features)):
        raise DataError("features must be finite numbers; found NaN, inf or a non-numeric dtype")
    if labels.ndim != 1:
        raise DataError(f"labels must be a 1-D array (N,) of class ids, got shape {labels.shape}")
    if labels.shape[0] != features.shape[0]:
        raise DataError(f"labels has {labels.shape[0]} entries but features has {features.shape[0]} rows")
    if not _integral(labels):
        raise DataError(f"labels must be integer class ids in [0, C), got dtype {labels.dtype}")
    if np.any(labels < 0):
        raise DataError("labels must be class ids in [0, C); found a negative label")
    classes, labels = np.unique(labels.astype(np.int64), return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"scoring needs at least 2 classes in labels, found {len(classes)}")
    return features.astype(np.float64), labels.astype(np.int64), len(classes)


def _integral(labels: np.ndarray) -> bool:
    """Integer or bool dtype, or floats that are whole numbers (labels read from a table often are)."""
    if np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.bool_):
        return True
    return np.issubdtype(labels.dtype, np.floating) and bool(np.all(labels == np.round(labels)))


def check_source_probs(source_probs: np.ndarray | None, n: int, scorer: str) -> np.ndarray:
    """Validate the source classifier's softmax outputs.

    Shape: source_probs (N, K) with rows on the probability simplex -> (N, K) float64.

    Raises:
        DataError (a ValueError): None, wrong shape, or rows that are not probabilities (logits?).
    """
    if source_probs is None:
        raise DataError(f"{scorer} needs source_probs (N, K): the softmax of the candidate's source classifier")
    probs = np.asarray(source_probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != n or probs.shape[1] == 0:
        raise DataError(f"source_probs must have shape (N={n}, K), got {probs.shape}")
    if not np.all(np.isfinite(probs)) or np.any(probs < 0) or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise DataError("source_probs rows must be probabilities that sum to 1; apply softmax to logits first")
    return probs
