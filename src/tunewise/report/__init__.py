"""Terminal tables from plain records and dicts; nothing here imports torch."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from tunewise.records import Leaderboard, RunRecord

console = Console()


def knob_text(knobs: dict) -> str:
    """` (r=16)` for knobs the search chose; empty for defaults."""
    return f" ({', '.join(f'{k}={v}' for k, v in sorted(knobs.items()))})" if knobs else ""


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


# the column shown beside each task's selection metric
SECOND_METRIC = {("token_classification", "f1"): "accuracy", ("question_answering", "f1"): "exact_match",
                 ("object_detection", "map"): "map_50", ("semantic_segmentation", "miou"): "pixel_accuracy"}
SHORT_NAMES = {"accuracy": "acc", "macro_f1": "F1", "f1": "F1", "exact_match": "EM", "map": "mAP",
               "map_50": "mAP@.5", "miou": "mIoU", "pixel_accuracy": "pixel acc"}


def records_table(records: list[RunRecord], title: str = "results") -> Table:
    """One row per run: validation and test scores, time, trainable parameters."""
    models = sorted({r.model for r in records})
    caption = "* features computed once, cached" if any(r.cached_features for r in records) else None
    table = Table(title=f"{title} ({', '.join(models)})", caption=caption)
    second = SECOND_METRIC.get((records[0].task, records[0].metric), "macro_f1")
    first, other = SHORT_NAMES[records[0].metric], SHORT_NAMES[second]
    for column in ("strategy", f"val {first} %", f"val {other} %", f"test {first} %", f"test {other} %",
                   "best/ran", "time s", "trainable"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for r in records:
        test = r.test or {}
        table.add_row(r.strategy + (" *" if r.cached_features else ""), _pct(r.val.get(r.metric)),
                      _pct(r.val.get(second)), _pct(test.get(r.metric)),
                      _pct(test.get(second)), f"{r.best_epoch + 1}/{r.epochs_run}",
                      f"{r.seconds:.1f}", f"{_count(r.trainable_params)}/{_count(r.total_params)}")
    return table


def print_records(records: list[RunRecord], title: str = "results") -> None:
    console.print(records_table(records, title))


def print_metrics(metrics: dict) -> None:
    table = Table(title=f"{metrics.get('split', '')} metrics ({metrics.get('examples', '?')} examples)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, float):
            table.add_row(key, f"{value:.4f}")
    console.print(table)
    if "confusion_matrix" in metrics:
        console.print("confusion matrix (rows: true class, columns: predicted):")
        for row in metrics["confusion_matrix"]:
            console.print("  " + " ".join(f"{v:6d}" for v in row))


def print_predictions(rows: list[dict]) -> None:
    """One row per input: the image or text, and what the model said (per-class columns left out)."""
    table = Table(title=f"{len(rows)} predictions")
    shown = [k for k in rows[0] if not k.startswith("p_") and k != "context"] if rows else []
    for column in shown:
        table.add_column(column, justify="right" if column == "probability" else "left")
    for row in rows:
        table.add_row(*(_cell(row[k]) for k in shown))
    console.print(table)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):  # segmentation: each class's share of the pixels
        return ", ".join(f"{k} {100 * v:.0f}%" for k, v in value.items())
    if isinstance(value, list) and value and "box" in value[0]:  # detections: "bag 0.91, dress 0.45"
        return ", ".join(f"{o['label']} {o['score']:.2f}" for o in value)
    if isinstance(value, list):  # entities: "Maria Lopez (PER), Oslo (LOC)"
        return ", ".join(f"{e.get('word', '')} ({e.get('entity_group', e.get('entity', ''))})" for e in value)
    return str(value)


def _interval(mean: float, low: float, high: float) -> str:
    return f"{100 * mean:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def print_leaderboard(board: Leaderboard) -> None:
    """The arms with their intervals, then the decision in words."""
    table = Table(title=f"search: {board.model} on {board.data} ({len(board.trials)} trials, "
                        f"{board.compute:.1f} epoch-equivalents, {board.seconds:.0f} s)")
    for column in ("strategy", "lr", "seeds", f"val {board.metric} % [95% CI]", "test %"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for arm in board.arms:
        test = arm.test.get(board.metric) if arm.test else None
        name = arm.name + knob_text(arm.knobs) + (" (winner)" if arm.name == board.winner else "")
        table.add_row(name, f"{arm.lr:.2g}", str(len(arm.seeds)), _interval(arm.mean, arm.ci_low, arm.ci_high),
                      _pct(test))
    console.print(table)
    if board.runner_up:
        console.print(_difference(board.winner, board.runner_up, "runner-up"))
    if board.versus_scratch:
        best = next(a.strategy for a in board.arms if a.strategy != "scratch")
        console.print(_difference(best, board.versus_scratch, "is pretraining worth it?"))


def _difference(name: str, diff: dict, label: str) -> str:
    spread = _interval(diff["mean"], diff["ci_low"], diff["ci_high"])
    return f"{label}: {name} - {diff['versus']} = {spread} points (paired over seeds {diff['seeds']})"


def print_trials(board: Leaderboard) -> None:
    """Every trial of a search: what ran, how far, what it scored, what it cost."""
    table = Table(title="trials")
    for column in ("#", "tier", "strategy", "lr", "seed", "state", f"best val {board.metric} %", "epochs",
                   "trainable", "time s"):
        table.add_column(column, justify="left" if column in ("tier", "strategy", "state") else "right")
    for t in board.trials:
        table.add_row(str(t.number), t.tier, t.strategy + knob_text(t.knobs) + (f" on {t.model}" if t.model else ""),
                      f"{t.lr:.2g}", str(t.seed), t.state,
                      _pct(t.val),
                      str(t.epochs_run), _count(t.trainable_params) if t.trainable_params else "-",
                      f"{t.seconds:.0f}")
    console.print(table)


def print_ranking(ranking) -> None:
    """The candidates best first, every scorer's score, and the check against fine-tuning."""
    from tunewise.ranking import SCORERS

    table = Table(title=f"which model for {ranking.data}? ({ranking.examples} training examples scored)",
                  caption="higher is better in every column; combined: mean rank position, 0 worst .. 1 best")
    for column in ("model", "combined", *SCORERS, f"fine-tuned {ranking.metric}"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for c in ranking.candidates:
        if c.error:
            table.add_row(c.model, "failed", *[""] * len(SCORERS), "")
            continue
        cells = [f"{c.scores[n]:.3f}" if c.scores.get(n) == c.scores.get(n) else "-" for n in SCORERS]
        table.add_row(c.model, f"{c.combined:.2f}", *cells, _pct(c.finetuned))
    console.print(table)
    for c in ranking.candidates:
        if c.error:
            console.print(f"not ranked: {c.model}: {c.error}")
    if ranking.kendall_tau is not None:
        console.print(f"ranking vs fine-tuning: Kendall's tau {ranking.kendall_tau:+.2f}, weighted tau "
                      f"{ranking.weighted_tau if ranking.weighted_tau is None else round(ranking.weighted_tau, 2)}")
