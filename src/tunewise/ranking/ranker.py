"""Which pretrained model to start from, estimated from one feature pass per candidate
(`score_candidates`), and checked against short real fine-tunes of some (`verify`, given the
fine-tuning function: ranking sits below training). `tunewise.rank` composes them.

Features come through the same extract-once cache as the linear probe, so a later
`tunewise fit --strategy linear_probe` (or search) on a ranked candidate extracts nothing.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tunewise.config import DataConfig, TrainConfig, default_cache_dir, raise_if_problems, validate_data
from tunewise.errors import TunewiseError
from tunewise.io import file_safe
from tunewise.ranking import SCORERS, combined_rank
from tunewise.records import Candidate, Ranking, RunRecord

log = logging.getLogger("tunewise")

def score_candidates(models: list[str], data_config: DataConfig, task, run_dir: Path,
                     max_examples: int = 3000) -> Ranking:
    """Score every candidate on the training split with every scorer; merge the scorers by rank.
    The Ranking's candidates come best first; one that cannot be loaded is reported, not fatal.

    Raises:
        TunewiseError: fewer than two candidates, fewer than two usable ones, bad data, or a
            task no scorer handles (question answering, detection, segmentation).
    """
    from tunewise.data import load_data

    models = list(dict.fromkeys(models))  # a candidate named twice is ranked once
    if len(models) < 2:
        raise TunewiseError(f"there is nothing to rank with {len(models)} candidate ({', '.join(models)}). "
                            "Pass two or more models: --models pkg:efficientnet_lite0,pkg:efficientnet_lite1.")
    if not task.rankable:  # spans, boxes, masks: no label per feature row
        raise TunewiseError(f"ranking scores one label per feature row; {task.name} has spans, boxes or masks, "
                            "not labels. Rank candidates on classification data, or compare them with search.")
    raise_if_problems(validate_data(data_config))
    splits = load_data(data_config, task)

    candidates, features, probs, labels = [], {}, {}, None
    for model in models:
        started = time.perf_counter()
        try:
            f, y, p = candidate_features(model, task, splits, data_config)
        except TunewiseError as err:  # rank the rest; say which failed and why
            log.warning("cannot rank %s: %s", model, err)
            candidates.append(Candidate(model=model, error=str(err)))
            continue
        keep = _sample(y, max_examples)
        features[model], labels = f[keep], y[keep]
        if p is not None:
            probs[model] = p[keep]
        candidates.append(Candidate(model=model, feature_seconds=round(time.perf_counter() - started, 2)))
    scored = [c for c in candidates if c.error is None]
    if len(scored) < 2:
        failed = "; ".join(f"{c.model}: {c.error}" for c in candidates if c.error)
        raise TunewiseError(f"only {len(scored)} of the candidates could be loaded, so there is nothing to rank "
                            f"({failed}).")
    assert labels is not None, "a scored candidate set them"
    _score(scored, features, labels, probs)
    candidates.sort(key=lambda c: (c.error is not None, -_finite(c.combined)))
    return Ranking(run_dir=str(run_dir), data=data_config.data, task=task.name, metric=task.metric,
                   examples=int(len(labels)), candidates=candidates)


def candidate_features(model: str, task, splits, data_config: DataConfig):
    """The training split's features of one candidate (through the linear probe's cache), its
    labels, and its source classifier's probabilities where it has one.

    Shape: features (N, D), labels (N,), probabilities (N, K) or None; N rows are examples
    (pooled features) or labelled tokens (token classification).
    """
    import torch

    from tunewise.assemble import check_backbone_fits, configured_preprocess
    from tunewise.backbones import load_backbone
    from tunewise.features import cache_key, cached_features, weights_digest

    backbone = load_backbone(model)
    check_backbone_fits(backbone, task, model)
    preprocess = configured_preprocess(backbone.preprocess, data_config, task)
    task.build_model(backbone, splits.classes)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone.model.to(device)
    key = cache_key(f"{weights_digest(backbone.model)}|{task.name}", preprocess, splits.train)
    loader = task.loader(splits.train, preprocess, TrainConfig(batch_size=64, num_workers=0), training=False)
    stored = cached_features(backbone.model, loader, device, key, default_cache_dir() / "features",
                             desc=f"features {model}")
    features = stored["features"].numpy().astype(np.float64)
    probabilities = None
    if backbone.source_head is not None and task.modality == "image" and not task.dense:  # its ImageNet classes
        with torch.no_grad():
            logits = backbone.source_head.to(device)(stored["features"].to(device)).float()
        probabilities = logits.softmax(1).cpu().numpy().astype(np.float64)
    return features, stored["targets"].numpy(), probabilities


def _sample(labels: np.ndarray, count: int) -> np.ndarray:
    """At most `count` row indices, a seeded sample in proportion to each class."""
    if len(labels) <= count:
        return np.arange(len(labels))
    rng = np.random.default_rng(0)
    keep = [rng.permutation(np.flatnonzero(labels == c))[: max(1, round(count * np.mean(labels == c)))]
            for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def _score(scored: list[Candidate], features: dict, labels: np.ndarray, probs: dict) -> None:
    table: dict[str, dict[str, float]] = {name: {} for name in SCORERS}
    for candidate in scored:
        started = time.perf_counter()
        for name, scorer in SCORERS.items():
            if scorer.needs_source_head and candidate.model not in probs:
                candidate.scores[name] = math.nan  # no source classifier: the scorer does not apply
                continue
            try:
                candidate.scores[name] = float(scorer(features[candidate.model], labels, probs.get(candidate.model)))
            except ValueError as err:  # e.g. a class too small for the linear probe's folds
                log.warning("%s could not score %s: %s", name, candidate.model, err)
                candidate.scores[name] = math.nan
            table[name][candidate.model] = candidate.scores[name]
        candidate.score_seconds = round(time.perf_counter() - started, 3)
    combined = combined_rank(table)
    for candidate in scored:
        candidate.combined = combined.get(candidate.model, math.nan)


def verify(ranking: Ranking, top: int, finetune: Callable[[str, Path], RunRecord]) -> None:
    """Fine-tune the top `top` candidates and the last one with `finetune(model, out)`; Kendall's
    tau (and weighted tau, and each scorer's tau) between the ranking and the fine-tuned results."""
    from scipy import stats

    ordered = [c for c in ranking.candidates if c.error is None]
    chosen = ordered[:top] + ([ordered[-1]] if len(ordered) > top else [])
    for candidate in chosen:
        record = finetune(candidate.model, Path(ranking.run_dir) / "verify" / file_safe(candidate.model))
        candidate.finetuned, candidate.finetune_seconds, candidate.run_dir = \
            record.val_score, record.seconds, record.run_dir
    if len(chosen) < 2:
        return
    results = [c.finetuned for c in chosen]
    ranking.kendall_tau = _nan_to_none(stats.kendalltau([c.combined for c in chosen], results).statistic)
    ranking.weighted_tau = _nan_to_none(stats.weightedtau([c.combined for c in chosen], results).statistic)
    for name in SCORERS.names():
        values = [c.scores.get(name, math.nan) for c in chosen]
        if all(math.isfinite(v) for v in values):
            ranking.scorer_taus[name] = _nan_to_none(stats.kendalltau(values, results).statistic)


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


def _nan_to_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)
