"""LEEP: how well the source classifier's outputs, re-mapped to target labels, predict them.

Nguyen et al. 2020, "LEEP: A New Measure to Evaluate Transferability of Learned Representations",
https://arxiv.org/abs/2002.12462
"""

from __future__ import annotations

import numpy as np

from tunewise.ranking._checks import check_inputs, check_source_probs
from tunewise.ranking.scorers import scorer


@scorer("leep", needs_source_head=True)
def leep(features: np.ndarray, labels: np.ndarray, source_probs: np.ndarray | None = None) -> float:
    """Log expected empirical prediction; higher = transfers better (always <= 0, in nats).

    Shape: features (N, D) (only checked, not used), labels (N,) int in [0, C),
    source_probs (N, K) softmax of the source classifier -> scalar.

    With theta_i(z) = source_probs[i, z]: joint P(y, z) = sum_i theta_i(z) 1[y_i = y] / N,
    P(y | z) = P(y, z) / P(z), and LEEP = mean_i log(sum_z P(y_i | z) theta_i(z)).

    Raises:
        ValueError: source_probs is None (the candidate has no source head) or malformed.
    """
    _, labels, n_classes = check_inputs(features, labels)
    probs = check_source_probs(source_probs, labels.shape[0], "leep")
    n = labels.shape[0]
    joint = np.zeros((n_classes, probs.shape[1]))
    np.add.at(joint, labels, probs / n)  # joint[y, z] += theta_i(z) / N
    p_z = joint.sum(axis=0, keepdims=True)
    # A source class no example puts mass on has P(z) = 0; theta_i(z) = 0 there, so its P(y|z) is irrelevant.
    p_y_given_z = np.divide(joint, p_z, out=np.zeros_like(joint), where=p_z > 0)
    expected = np.sum(probs * p_y_given_z[labels], axis=1)  # sum_z P(y_i | z) theta_i(z)
    return float(np.mean(np.log(expected)))
