"""kNN: leave-one-out accuracy of a cosine k-nearest-neighbour classifier on the features."""

from __future__ import annotations

import numpy as np

from tunewise.ranking._checks import check_inputs
from tunewise.ranking.scorers import scorer

NEIGHBOURS = 5
CHUNK = 2048  # rows of the similarity matrix held at once: 2048 x N float64


@scorer("knn")
def knn(features: np.ndarray, labels: np.ndarray, source_probs: np.ndarray | None = None) -> float:
    """Leave-one-out 5-NN accuracy with cosine similarity; higher = transfers better, in [0, 1].

    Shape: features (N, D) float, labels (N,) int in [0, C), source_probs ignored -> scalar.

    Each example is classified by majority vote of its k = min(5, N - 1) most similar other
    examples (L2-normalised features, dot product). A tied vote goes to the tied class whose
    member is nearest. Deterministic, no training.
    """
    features, labels, n_classes = check_inputs(features, labels)
    k = min(NEIGHBOURS, len(labels) - 1)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    # float32 halves the O(N^2 D) similarity cost; the vote only needs the order of neighbours.
    unit = (features / np.maximum(norms, 1e-12)).astype(np.float32)  # a zero vector stays zero: similar to nothing
    correct = 0
    for start in range(0, len(unit), CHUNK):
        rows = np.arange(start, min(start + CHUNK, len(unit)))
        similarity = unit[rows] @ unit.T
        similarity[np.arange(len(rows)), rows] = -np.inf  # leave the example itself out
        correct += int(np.sum(_vote(similarity, labels, k, n_classes) == labels[rows]))
    return correct / len(labels)


def _vote(similarity: np.ndarray, labels: np.ndarray, k: int, n_classes: int) -> np.ndarray:
    """Majority label of the k most similar columns, ties to the nearest tied class.

    Shape: similarity (R, N), labels (N,) -> (R,) predicted labels.
    """
    nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(similarity, nearest, axis=1), axis=1, kind="stable")
    neighbour_labels = labels[np.take_along_axis(nearest, order, axis=1)]  # (R, k), nearest first
    counts = np.zeros((len(similarity), n_classes), dtype=np.int64)
    np.add.at(counts, (np.arange(len(similarity))[:, None], neighbour_labels), 1)
    top = np.take_along_axis(counts, neighbour_labels, axis=1) == counts.max(axis=1, keepdims=True)
    first_tied = np.argmax(top, axis=1)  # nearest neighbour whose class has the most votes
    return neighbour_labels[np.arange(len(similarity)), first_tied]
