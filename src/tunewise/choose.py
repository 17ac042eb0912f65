"""`tunewise.rank`: score candidate backbones, optionally verify against short fine-tunes, write
the ranking and its report. It sits above ranking and training, which do not know each other."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tunewise.config import DEFAULT_TASK, VERIFY_STRATEGY, DataConfig, TrainConfig
from tunewise.io import claim_folder, default_run_dir
from tunewise.records import Ranking


def rank(
    models: list[str],
    data: str | DataConfig = "textile",
    *,
    task: str = DEFAULT_TASK,
    verify: int = 0,
    verify_strategy: str = VERIFY_STRATEGY,
    train: TrainConfig | None = None,
    out: str | Path | None = None,
    max_examples: int = 3000,
) -> Ranking:
    """Score every candidate on the training split with every scorer; merge the scorers by rank.

    Args:
        models: two or more backbone names; one that cannot be loaded is reported, not fatal.
        data: the data set name, folder or file, or a DataConfig.
        task: a task with one label per example or token (image_classification,
            text_classification, token_classification).
        verify: fine-tune the top `verify` candidates (and the last one) with `verify_strategy`
            and `train` (default 3 epochs), then report Kendall's tau between ranking and result.
        out: the folder for ranking.json and the report; default runs/rank-<time>.
        max_examples: score at most this many training examples (a stratified sample).

    Returns:
        The Ranking, also written to `out/ranking.json` with report.md and report.html.

    Raises:
        TunewiseError: fewer than two candidates, fewer than two usable ones, bad data, or a
            task no scorer handles (question answering, detection, segmentation).
    """
    from tunewise.ranking.ranker import score_candidates
    from tunewise.ranking.ranker import verify as verify_ranking
    from tunewise.report.ranking_report import write_ranking_report
    from tunewise.tasks import get_task
    from tunewise.train import fit

    the_task = get_task(task)
    data_config = data if isinstance(data, DataConfig) else DataConfig(data=data)
    run_dir = claim_folder(Path(out) if out is not None else default_run_dir("rank", prefix="rank-"))
    ranking = score_candidates(models, data_config, the_task, run_dir, max_examples)
    if verify:
        train = train or TrainConfig(epochs=3)
        # rerun with the same --out after an interrupt, a verification run resumes (and a finished one only finishes)
        verify_ranking(ranking, verify, lambda model, folder: fit(model, data_config, verify_strategy, task=task,
                                                                    train=replace(train), out=folder, test=False,
                                                                    resume=(folder / "settings.json").is_file()))
    ranking.save(run_dir / "ranking.json")
    write_ranking_report(ranking, run_dir)
    return ranking
