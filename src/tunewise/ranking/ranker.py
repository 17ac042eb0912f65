"""rank(): which pretrained model to start from, estimated from one feature pass per candidate,
and (with `verify`) checked against short real fine-tunes of some candidates.

Features come through the same extract-once cache as the linear probe, so a later
`tunewise fit --strategy linear_probe` (or search) on a ranked candidate extracts nothing.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from tunewise.config import DataConfig, TrainConfig, default_cache_dir, raise_if_problems, validate_data
from tunewise.errors import TunewiseError
from tunewise.io import default_run_dir, file_safe
from tunewise.ranking import NEEDS_SOURCE_HEAD, SCORERS, combined_rank
from tunewise.records import Candidate, Ranking

log = logging.getLogger("tunewise")

UNRANKED_TASKS = ("question_answering", "object_detection", "semantic_segmentation")
"""Tasks with no label per feature row (spans, boxes, masks): nothing to score."""


def rank(
    models: list[str],
    data: str | DataConfig = "textile",
    *,
    task: str = "image_classification",
    verify: int = 0,
    verify_strategy: str = "lp_ft",
    train: TrainConfig | None = None,
    out: str | Path | None = None,
    max_examples: int = 3000,
) -> Ranking:
    """Score every candidate on the training split with every scorer; merge the scorers by rank.

    Args:
        models: two or more backbone names; one that cannot be loaded is reported, not fatal.
        data: the data set name, folder or file, or a DataConfig.
        task: image_classification, text_classification or token_classification.
        verify: fine-tune the top `verify` candidates (and the last one) with `verify_strategy`
            and `train` (default 3 epochs), then report Kendall's tau between ranking and result.
        out: the folder for ranking.json and the report; default runs/rank-<time>.
        max_examples: score at most this many training examples (a stratified sample).

    Returns:
        The Ranking, also written to `out/ranking.json` with report.md and report.html.

    Raises:
        TunewiseError: fewer than two candidates, fewer than two usable ones, bad data, or a
            task no scorer handles (question answering).
    """
    from tunewise.data import load_data
    from tunewise.tasks import get_task

    models = list(dict.fromkeys(models))  # a candidate named twice is ranked once
    if len(models) < 2:
        raise TunewiseError(f"there is nothing to rank with {len(models)} candidate ({', '.join(models)}). "
                            "Pass two or more models: --models pkg:efficientnet_lite0,pkg:efficientnet_lite1.")
    if task in UNRANKED_TASKS:
        raise TunewiseError(f"ranking scores one label per feature row; {task} has spans, boxes or masks, not "
                            "labels. Rank candidates on classification data, or compare them with search.")
    data_config = data if isinstance(data, DataConfig) else DataConfig(data=data)
    raise_if_problems(validate_data(data_config))
    the_task = get_task(task)
    splits = load_data(data_config, task)
    run_dir = Path(out) if out is not None else default_run_dir("rank", prefix="rank-")
    run_dir.mkdir(parents=True, exist_ok=True)

    candidates, features, probs, labels = [], {}, {}, None
    for model in models:
        started = time.perf_counter()
        try:
            f, y, p = candidate_features(model, the_task, splits, data_config)
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
    _score(scored, features, labels, probs)
    candidates.sort(key=lambda c: (c.error is not None, -_finite(c.combined)))
    ranking = Ranking(run_dir=str(run_dir), data=data_config.data, task=task, metric=the_task.metric,
                      examples=int(len(labels)), candidates=candidates)
    if verify:
        _verify(ranking, scored, verify, verify_strategy, data_config, train or TrainConfig(epochs=3))
    ranking.save(run_dir / "ranking.json")
    from tunewise.report.ranking_report import write_ranking_report

    write_ranking_report(ranking, run_dir)
    return ranking


def candidate_features(model: str, task, splits, data_config: DataConfig):
    """The training split's features of one candidate (through the linear probe's cache), its
    labels, and its source classifier's probabilities where it has one.

    Shape: features (N, D), labels (N,), probabilities (N, K) or None; N rows are examples
    (pooled features) or labelled tokens (token classification).
    """
    import torch

    from tunewise.backbones import load_backbone
    from tunewise.features import cache_key, cached_features, weights_digest
    from tunewise.train import check_backbone_fits, configured_preprocess

    backbone = load_backbone(model)
    check_backbone_fits(backbone, task.name, model)
    preprocess = configured_preprocess(backbone.preprocess, data_config, task.name)
    task.build_model(backbone, splits.classes)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone.model.to(device)
    key = cache_key(f"{weights_digest(backbone.model)}|{task.name}", preprocess, splits.train)
    loader = task.loader(splits.train, preprocess, TrainConfig(batch_size=64, num_workers=0), training=False)
    stored = cached_features(backbone.model, loader, device, key, default_cache_dir() / "features",
                             desc=f"features {model}")
    features = stored["features"].numpy().astype(np.float64)
    probabilities = None
    if backbone.source_head is not None and task.name == "image_classification":
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
            if name in NEEDS_SOURCE_HEAD and candidate.model not in probs:
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


def _verify(ranking: Ranking, scored: list[Candidate], top: int, strategy: str, data: DataConfig,
            train: TrainConfig) -> None:
    """Short fine-tunes of the top `top` candidates and the last one; rank correlations."""
    from scipy import stats

    from tunewise.train import fit

    ordered = [c for c in ranking.candidates if c.error is None]
    chosen = ordered[:top] + ([ordered[-1]] if len(ordered) > top else [])
    for candidate in chosen:
        record = fit(candidate.model, data, strategy, task=ranking.task, train=replace(train),
                     out=Path(ranking.run_dir) / "verify" / file_safe(candidate.model),
                     test=False)
        candidate.finetuned, candidate.finetune_seconds, candidate.run_dir = \
            record.val_score, record.seconds, record.run_dir
    if len(chosen) < 2:
        return
    results = [c.finetuned for c in chosen]
    ranking.kendall_tau = _nan_to_none(stats.kendalltau([c.combined for c in chosen], results).statistic)
    ranking.weighted_tau = _nan_to_none(stats.weightedtau([c.combined for c in chosen], results).statistic)
    for name in SCORERS:
        values = [c.scores.get(name, math.nan) for c in chosen]
        if all(math.isfinite(v) for v in values):
            ranking.scorer_taus[name] = _nan_to_none(stats.kendalltau(values, results).statistic)


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


def _nan_to_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)
