"""Terminal tables from plain records and dicts; nothing here imports torch."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tunewise.config import BASELINE_STRATEGY
from tunewise.records import BASE_GENERATIONS, GENERATIONS, Arm, Leaderboard, RunRecord

console = Console()


def knob_text(knobs: dict) -> str:
    """` (r=16)` for knobs the search chose; empty for defaults."""
    return f" ({', '.join(f'{k}={v}' for k, v in sorted(knobs.items()))})" if knobs else ""


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


SHORT_NAMES = {"accuracy": "acc", "macro_f1": "F1", "f1": "F1", "exact_match": "EM", "map": "mAP",
               "map_50": "mAP@.5", "miou": "mIoU", "pixel_accuracy": "pixel acc"}


def _short(metric: str) -> str:
    return SHORT_NAMES.get(metric, metric.replace("_", " "))


def records_table(records: list[RunRecord], title: str = "results") -> Table:
    """One row per run: validation and test scores, time, trainable parameters."""
    models = sorted({r.model for r in records})
    caption = "* features computed once, cached" if any(r.cached_features for r in records) else None
    table = Table(title=f"{title} ({', '.join(models)})", caption=caption)
    second = records[0].second_metric or "macro_f1"  # the column the task shows beside its metric
    first, other = _short(records[0].metric), _short(second)
    for column in ("strategy", f"val {first} %", f"val {other} %", f"test {first} %", f"test {other} %",
                   "best/ran", "time s", "trainable"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for r in records:
        test = r.test or {}
        table.add_row(r.strategy + (" *" if r.cached_features else ""), _pct(r.val.get(r.metric)),
                      _pct(r.val.get(second)), _pct(test.get(r.metric)),
                      _pct(test.get(second)), f"{r.best_epoch + 1}/{r.epochs_run}",
                      f"{r.seconds:.1f}", f"{count(r.trainable_params)}/{count(r.total_params)}")
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


# --- a search's answer in words: shared by the terminal and the report ----------------------------

def pct(value: float | None) -> str:
    """A metric value (a fraction) in percent: `71.3%`."""
    return "-" if value is None or _missing(value) else f"{100 * value:.1f}%"


def _missing(*values) -> bool:
    return any(v is None or v != v for v in values)  # None or NaN


def arm_score(arm: Arm) -> str:
    """`80.7% [75.0, 86.0]`: the arm's mean and its 95% interval, when the interval has a width."""
    if _missing(arm.ci_low, arm.ci_high) or not arm.ci_high > arm.ci_low:
        return f"{pct(arm.mean)} (no interval)"
    return f"{pct(arm.mean)} [{100 * arm.ci_low:.1f}, {100 * arm.ci_high:.1f}]"


def in_points(diff: dict) -> str:
    """`+4.2 points [-1.0, +9.5]`: a difference between two arms, in percentage points."""
    head = f"{100 * diff['mean']:+.1f} points"
    if _missing(diff.get("ci_low"), diff.get("ci_high")):
        return f"{head} (no interval)"
    return f"{head} [{100 * diff['ci_low']:+.1f}, {100 * diff['ci_high']:+.1f}]"


def verdict(diff: dict) -> str:
    """The record's verdict, with each side's seeds; an older leaderboard recorded none."""
    words = diff.get("verdict", "no verdict recorded (an older leaderboard)")
    seeds = diff.get("seeds")
    if "verdict" in diff and isinstance(seeds, list) and len(seeds) == 2:
        words += f", {seeds[0]} and {seeds[1]} seeds"
    return words


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def winner_arm(board: Leaderboard) -> Arm | None:
    return next((a for a in board.arms if a.name == board.winner), None)


def answer(board: Leaderboard, folder: Path | str | None = None) -> list[str]:
    """Three plain sentences: what won, whether pretraining beat scratch (a generator: whether fine-tuning
    beat its base model, from the generations in `folder`, by default the search's own), what was not
    measured."""
    folder = folder or board.run_dir
    generations = generations_of(Path(folder)) if folder else None
    versus = _versus_base_sentence(board, generations[0]) if generations else scratch_sentence(board)
    return [winner_sentence(board), versus, unmeasured_sentence(board)]


def generations_of(folder: Path) -> tuple[dict, list] | None:
    """A generator search's base-model generations (scored) and the winner's, when both are there."""
    base, tuned = folder / BASE_GENERATIONS, folder / "model" / GENERATIONS
    if not (base.is_file() and tuned.is_file()):
        return None
    return json.loads(base.read_text()), json.loads(tuned.read_text())


def _versus_base_sentence(board: Leaderboard, base: dict) -> str:
    """Fine-tuning vs the base model, for a generator: the winner's generation scores beside the base's."""
    arm = winner_arm(board)
    val = (arm.val or {}) if arm else {}
    if "exact_match" not in val:
        return "The winner's generations were not scored, so fine-tuning vs the base model was not measured."
    shown = len(base["examples"])
    ran = any(a.strategy == BASELINE_STRATEGY for a in board.arms)
    scratch = "" if ran else (" Training from scratch was not run: a generator trained from nothing on this "
                              "little data is not a meaningful comparison.")
    return (f"Fine-tuning vs the base model (no fine-tuning), greedy generations on {shown} validation examples: "
            f"exact match {pct(base['exact_match'])} \u2192 {pct(val['exact_match'])}, token F1 "
            f"{pct(base['token_f1'])} \u2192 {pct(val['token_f1'])} (no interval: {shown} examples, one seed)."
            + scratch)


def winner_sentence(board: Leaderboard) -> str:
    arm = winner_arm(board)
    if arm is None:
        return f"The search picked {board.winner}, but its arm is missing from the leaderboard."
    won = f"{arm.name}{knob_text(arm.knobs)} at lr {arm.lr:.3g}"
    score = f"validation {board.metric} {arm_score(arm)}"
    if board.pick.get("tied"):
        group = [board.pick["best_by_mean"], *board.pick["tied"]]
        cheaper = "cheaper" if len(group) == 2 else "cheapest"
        close = ("score within one standard error of each other" if "one-standard-error" in board.pick.get("rule", "")
                 else "cannot be told apart")  # an older leaderboard's rule
        return f"{_names(group)} {close}; picked the {cheaper}, {won} ({score})."
    if arm.strategy == BASELINE_STRATEGY:
        return f"{won} won ({score}): {board.pick.get('rule', 'training from scratch beat every pretrained arm')}."
    if board.runner_up:
        return (f"{won} won ({score}); over the next, {board.runner_up['versus']}: {in_points(board.runner_up)}, "
                f"{verdict(board.runner_up)}.")
    if any(t.state == "complete" and t.strategy not in (arm.strategy, BASELINE_STRATEGY) for t in board.trials):
        return f"{won} won ({score}), the one finalist; the trials table shows how the others scored."
    return f"{won} won ({score}), the only pretrained arm that completed."


def scratch_sentence(board: Leaderboard) -> str:
    """Whether pretraining beat training from scratch, in points, never called significant unless recorded so."""
    versus = board.versus_scratch
    if versus:
        if "significant" not in versus:
            lead = "Pretraining vs training from scratch"
        elif versus["significant"]:
            lead = "Pretraining beat training from scratch" if versus["mean"] > 0 else \
                "Training from scratch beat pretraining"
        else:
            lead = "Pretraining and training from scratch cannot be told apart"
        of = versus.get("of", board.winner)
        return f"{lead}: {of} vs scratch, {in_points(versus)} of validation {board.metric} ({verdict(versus)})."
    scratch = next((a for a in board.arms if a.strategy == BASELINE_STRATEGY), None)
    pretrained = next((a for a in board.arms if a.strategy != BASELINE_STRATEGY), None)
    if scratch is None:
        return "Pretraining vs training from scratch was not measured: no scratch baseline ran."
    if pretrained is None:
        return "No pretrained arm completed, so pretraining vs training from scratch was not measured."
    if board.winner != scratch.name:
        return "No difference between pretraining and training from scratch was recorded."
    return (f"Training from scratch won over pretraining: scratch {arm_score(scratch)} against {pretrained.name} "
            f"{arm_score(pretrained)} of validation {board.metric}.")


def unmeasured_sentence(board: Leaderboard) -> str:
    if board.unmeasured:
        reasons = {why: [n for n, w in board.unmeasured.items() if w == why] for why in board.unmeasured.values()}
        return "Not measured: " + "; ".join(f"{_names(names)} \u2014 {why.rstrip('.')}"
                                            for why, names in reasons.items()) + "."
    if not board.interval_method:  # a leaderboard from before unmeasured strategies were recorded
        return "This older leaderboard does not record unmeasured strategies; the trials table shows each one's state."
    return "Every strategy asked for was measured."


def notes(board: Leaderboard) -> list[str]:
    """How to read the numbers: the metric and why, the majority-class line, what this validation set can
    detect, how the intervals were made."""
    found = [f"Selected on validation {board.metric_reason or board.metric}."]
    if board.baseline and board.metric in board.baseline:
        found.append(f"Always answering {board.baseline['predicts']!r} (the majority class) scores "
                     f"{pct(board.baseline[board.metric])}: the line to beat.")
    if board.detectable is not None:
        found.append(f"This validation set cannot tell apart differences smaller than about "
                     f"{100 * board.detectable:.1f} points.")
    if board.interval_method:
        found.append(f"Intervals: {board.interval_method}.")
    return found


def print_leaderboard(board: Leaderboard) -> None:
    """The arms with their intervals, how to read them and the warnings; the answer in three sentences last."""
    table = Table(title=f"search: {board.model} on {board.data} ({len(board.trials)} trials, "
                        f"{board.compute:.1f} epoch-equivalents, {board.seconds:.0f} s)")
    for column in ("strategy", "lr", "seeds", f"val {board.metric} [95% CI]", "test (seed-0 run)"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for arm in board.arms:
        name = arm.name + knob_text(arm.knobs) + (" (winner)" if arm.name == board.winner else "")
        table.add_row(name, f"{arm.lr:.2g}", str(len(arm.seeds)), arm_score(arm),
                      pct((arm.test or {}).get(board.metric)))
    if board.baseline and board.metric in board.baseline:
        table.add_row(f"always {board.baseline['predicts']!r} (majority class)", "", "",
                      pct(board.baseline[board.metric]), "")
    console.print(table)
    for line in notes(board):
        console.print(line, markup=False)
    for line in board.warnings:
        console.print(f"WARNING: {line}", style="bold yellow", markup=False)
    console.print()
    for sentence in answer(board):
        console.print(sentence, style="bold", markup=False)


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
                      str(t.epochs_run), count(t.trainable_params) if t.trainable_params else "-",
                      f"{t.seconds:.0f}")
    console.print(table)


def print_ranking(ranking) -> None:
    """The candidates best first, every scorer's score, and the check against fine-tuning."""
    from tunewise.report.ranking_report import scorer_names

    scorers = scorer_names(ranking)
    table = Table(title=f"which model for {ranking.data}? ({ranking.examples} training examples scored)",
                  caption="higher is better in every column; combined: mean rank position, 0 worst .. 1 best")
    for column in ("model", "combined", *scorers, f"fine-tuned {ranking.metric} %"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for c in ranking.candidates:
        if c.error:
            table.add_row(c.model, "failed", *[""] * len(scorers), "")
            continue
        cells = [f"{c.scores[n]:.3f}" if c.scores.get(n) == c.scores.get(n) else "-" for n in scorers]
        table.add_row(c.model, f"{c.combined:.2f}", *cells, _pct(c.finetuned))
    console.print(table)
    for c in ranking.candidates:
        if c.error:
            console.print(f"not ranked: {c.model}: {c.error}")
    if ranking.kendall_tau is not None:
        console.print(f"ranking vs fine-tuning: Kendall's tau {ranking.kendall_tau:+.2f}, weighted tau "
                      f"{ranking.weighted_tau if ranking.weighted_tau is None else round(ranking.weighted_tau, 2)}")
