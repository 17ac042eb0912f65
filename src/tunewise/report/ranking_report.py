"""A ranking's report from its `Ranking` record alone: a table of every score, and (after
`--verify`) a scatter of combined score vs fine-tuned metric with Kendall's tau. No torch."""

from __future__ import annotations

import math
from pathlib import Path

from tunewise.io import write_atomic
from tunewise.records import Ranking
from tunewise.report.render import html_page, markdown, new_figure, num, save_figure


def write_ranking_report(ranking: Ranking, folder: str | Path) -> list[Path]:
    """`report.md`, `report.html` and (with verified candidates) `verify.png` into `folder`."""
    folder = Path(folder)
    written = []
    verified = [c for c in ranking.candidates if c.finetuned is not None]
    if len(verified) >= 2:
        written.append(save_figure(_verify_figure(ranking), folder / "verify.png"))
    blocks = _blocks(ranking, has_plot=bool(written))
    for name, text in (("report.md", markdown(blocks)), ("report.html", html_page(blocks, folder))):
        write_atomic(folder / name, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))  # noqa: B023 (called at once)
        written.append(folder / name)
    return written


def scorer_names(ranking: Ranking) -> list[str]:
    """The scorers the ranking holds scores of (from the record: reports need no registry)."""
    return sorted({name for c in ranking.candidates for name in c.scores})


def _table(ranking: Ranking) -> tuple:
    scorers = scorer_names(ranking)
    headers = ["#", "model", "combined", *scorers, f"fine-tuned {ranking.metric}", "features s", "note"]
    rows = []
    for place, c in enumerate(ranking.candidates, start=1):
        scores = [num(c.scores.get(name), 4) if c.error is None else "" for name in scorers]
        rows.append([str(place) if c.error is None else "-", c.model, num(c.combined), *scores,
                     num(c.finetuned), num(c.feature_seconds, 1), c.error or ""])
    right = [True, False, True, *[True] * len(scorers), True, True, False]
    return "table", headers, rows, right


def _verdict(ranking: Ranking) -> str:
    best = next((c for c in ranking.candidates if c.error is None), None)
    scorers = len(scorer_names(ranking))
    text = f"Start from {best.model}: the best combined score over {scorers} scorers." if best else ""
    if ranking.kendall_tau is None:
        return text + " Not verified: rerun with --verify K to check the ranking against real fine-tunes."
    trust = "agrees with" if ranking.kendall_tau >= 0.6 else "partly agrees with" \
        if ranking.kendall_tau > 0 else "does not agree with"
    return (f"{text} On this data the ranking {trust} short fine-tunes: Kendall's tau {ranking.kendall_tau:+.2f}, "
            f"weighted tau {num(ranking.weighted_tau, 2)} (1: same order, 0: unrelated, -1: reversed).")


def _blocks(ranking: Ranking, has_plot: bool) -> list[tuple]:
    failed = [c for c in ranking.candidates if c.error]
    blocks = [("h1", f"Which pretrained model for {ranking.data}?"),
              ("list", [f"Task: {ranking.task}", f"Training examples scored: {ranking.examples}",
                        f"Run folder: {ranking.run_dir}"]),
              ("h2", "Verdict"), ("p", _verdict(ranking)),
              ("h2", "Scores"),
              ("p", "Best first. Each scorer: higher is better (LogME, LEEP, NCE, H-score, kNN and linear-probe "
                    "accuracy on the cached features). Combined: each candidate's mean rank position over the "
                    "scorers, 0 (worst) to 1 (best). LEEP needs the model's own source classifier."),
              _table(ranking)]
    if ranking.scorer_taus:
        taus = [f"{name}: {num(tau, 2)}" for name, tau in ranking.scorer_taus.items()]
        blocks += [("p", "Kendall's tau of each scorer alone vs the fine-tuned results: " + ", ".join(taus) + ".")]
    if has_plot:
        blocks += [("image", "verify.png", "Combined score vs the fine-tuned validation metric of the verified "
                                           "candidates.")]
    if failed:
        blocks += [("h2", "Not ranked"), ("list", [f"{c.model}: {c.error}" for c in failed])]
    return blocks


def _verify_figure(ranking: Ranking):
    figure, ax = new_figure(6.5, 4.6)
    verified = [c for c in ranking.candidates if c.finetuned is not None and math.isfinite(c.combined)]
    ax.scatter([c.combined for c in verified], [c.finetuned for c in verified], color="tab:blue", zorder=3)
    for c in verified:
        ax.annotate(c.model, (c.combined, c.finetuned), xytext=(5, 4), textcoords="offset points", fontsize=8)
    ax.set_xlabel("combined transferability score (0 worst .. 1 best)")
    ax.set_ylabel(f"fine-tuned validation {ranking.metric}")
    tau = "n/a" if ranking.kendall_tau is None else f"{ranking.kendall_tau:+.2f}"
    ax.set_title(f"Ranking vs fine-tuning: Kendall's tau {tau}")
    ax.grid(alpha=0.3)
    return figure
