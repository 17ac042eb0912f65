"""NCE: negative conditional entropy of the target labels given the source labels.

Tran et al. 2019, "Transferability and Hardness of Supervised Classification Tasks",
https://arxiv.org/abs/1908.08142
"""

from __future__ import annotations

import numpy as np

from tunewise.ranking._checks import check_inputs, check_source_probs
from tunewise.ranking.scorers import scorer

CLUSTERS_PER_CLASS = 2
SEED = 0


@scorer("nce")
def nce(features: np.ndarray, labels: np.ndarray, source_probs: np.ndarray | None = None) -> float:
    """-H(Y | Z) in nats; higher = transfers better (0 when Z determines Y, -H(Y) when independent).

    Shape: features (N, D) float, labels (N,) int in [0, C), source_probs (N, K) or None -> scalar.

    Z, the source label of each example, is the argmax of source_probs when given. Without a
    source head, Z is a k-means cluster of the features (k-means++, seed 0,
    k = min(2 C, number of distinct feature rows)): twice the classes leaves room for classes
    with several modes. Apart from degenerate features, k depends on the data set alone, because a finer
    partition never lowers NCE and a k that grew with the model would bias the ranking.
    """
    features, labels, n_classes = check_inputs(features, labels)
    if source_probs is not None:
        source = np.argmax(check_source_probs(source_probs, labels.shape[0], "nce"), axis=1)
    else:
        source = _clusters(features, min(CLUSTERS_PER_CLASS * n_classes, labels.shape[0]))
    return negative_conditional_entropy(labels, source)


def negative_conditional_entropy(labels: np.ndarray, source: np.ndarray) -> float:
    """-H(Y | Z) from the empirical joint of two labelings.

    Shape: labels (N,) int >= 0, source (N,) int >= 0 -> scalar.
    """
    joint = np.zeros((labels.max() + 1, source.max() + 1))
    np.add.at(joint, (labels, source), 1.0 / labels.shape[0])
    p_z = joint.sum(axis=0, keepdims=True)
    p_y_given_z = np.divide(joint, p_z, out=np.ones_like(joint), where=joint > 0)
    # Empty cells have P(y, z) = 0 and contribute 0 log 0 = 0: log(1) there does exactly that.
    return float(np.sum(joint * np.log(p_y_given_z)))


def _clusters(features: np.ndarray, k: int) -> np.ndarray:
    """k-means cluster ids, deterministic.

    Shape: features (N, D), k -> (N,) int in [0, k).
    """
    import warnings

    from scipy.cluster.vq import kmeans2

    # k-means++ cannot place more centres than there are distinct points (it would divide 0 by 0).
    k = min(k, len(np.unique(features, axis=0)))
    if k == 1:
        return np.zeros(features.shape[0], dtype=np.int64)
    with warnings.catch_warnings():
        # An empty cluster is harmless here: it just holds no example.
        warnings.simplefilter("ignore", UserWarning)
        _, assignment = kmeans2(features, k, minit="++", seed=SEED)
    return assignment
