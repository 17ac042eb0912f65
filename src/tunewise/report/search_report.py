"""A search's report from its `Leaderboard` alone: four PNG plots, `report.md` and `report.html`.

The first screen answers in three sentences (what won, whether pretraining beat scratch, what was
not measured), then the warnings and how to read the numbers; metric values are in percent and
differences in points everywhere. `report.html` is one self-contained file: its plots are embedded.

Nothing here imports torch: `tunewise report RUN_DIR` can rebuild a report on any machine.
Plots use matplotlib's object API (`Figure`), never pyplot: no global state, no display needed.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, PercentFormatter
from matplotlib.transforms import offset_copy

from tunewise.config import BASELINE_STRATEGY, PROBE_STRATEGY
from tunewise.io import write_atomic
from tunewise.records import Arm, Leaderboard
from tunewise.report import (
    answer,
    arm_score,
    count,
    generations_of,
    in_points,
    knob_text,
    notes,
    pct,
    scratch_sentence,
    verdict,
    winner_arm,
)
from tunewise.report.render import DPI, html_page, is_missing, markdown, new_figure, num, save_figure

PLOTS = ("curves.png", "pareto.png", "leaderboard.png", "pretrained_vs_scratch.png", "predictions.png")
SCRATCH = BASELINE_STRATEGY
SCRATCH_COLOUR = "#333333"
BASELINE_COLOUR = "#b22222"
MARKERS = {"complete": "o", "pruned": "v", "fail": "X"}


def rebuild(run_dir: str | Path) -> list[Path]:
    """Write the report again from `run_dir/leaderboard.json`, into `run_dir`."""
    run_dir = Path(run_dir)
    return write_report(Leaderboard.load(run_dir / "leaderboard.json"), run_dir)


def write_report(board: Leaderboard, folder: str | Path) -> list[Path]:
    """Plots, `report.md` and `report.html` into `folder`, each written atomically; the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    colours = _colours(board)
    plots = {"curves.png": _curves_figure(board, colours), "pareto.png": _pareto_figure(board, colours),
             "leaderboard.png": _leaderboard_figure(board, colours)}
    if _scratch_arm(board) is not None and _pretrained_arm(board) is not None:
        plots["pretrained_vs_scratch.png"] = _versus_scratch_figure(board, colours)
    else:
        (folder / "pretrained_vs_scratch.png").unlink(missing_ok=True)  # a stale one from an older board
    written = [save_figure(figure, folder / name) for name, figure in plots.items()]
    drawn = {"predictions.png"} if (folder / "predictions.png").is_file() else set()  # detection, segmentation
    blocks = _blocks(board, set(plots) | drawn, folder)
    for name, text in (("report.md", markdown(blocks)), ("report.html", html_page(blocks, folder))):
        write_atomic(folder / name, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))  # noqa: B023 (called at once)
        written.append(folder / name)
    return written


# --- small helpers -----------------------------------------------------------------------------

def _pretrained_arm(board: Leaderboard) -> Arm | None:
    """The best arm that starts from pretrained weights (arms are best first)."""
    return next((a for a in board.arms if a.strategy != SCRATCH), None)


def _scratch_arm(board: Leaderboard) -> Arm | None:
    return next((a for a in board.arms if a.strategy == SCRATCH), None)


def _versus_arm(board: Leaderboard) -> Arm | None:
    """The arm compared with scratch: the one the record names, else the best pretrained arm."""
    of = (board.versus_scratch or {}).get("of")
    return next((a for a in board.arms if a.name == of), None) or _pretrained_arm(board)


def _rate(value) -> str:
    return "-" if is_missing(value) else f"{value:.3g}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{seconds:.1f} s"


def _colours(board: Leaderboard) -> dict[str, tuple]:
    """One colour per strategy, the same in every plot; scratch is always dark grey."""
    names = dict.fromkeys([a.strategy for a in board.arms] + [t.strategy for t in board.trials])
    # tab10's grey is scratch's. It is a ListedColormap (ten RGB tuples); matplotlib types it as a Colormap
    palette = [c for i, c in enumerate(colormaps["tab10"].colors) if i != 7]  # type: ignore[attr-defined]
    pretrained = [n for n in names if n != SCRATCH]
    colours = {name: palette[i % len(palette)] for i, name in enumerate(pretrained)}
    colours[SCRATCH] = SCRATCH_COLOUR
    return colours


def _strategy_legend(ax, colours: dict, names, extra: list | None = None, **kwargs) -> None:
    handles = [Line2D([], [], color=colours[n], lw=2.5, label=n) for n in names] + (extra or [])
    if handles:
        ax.legend(handles=handles, fontsize=9, framealpha=0.9, **kwargs)


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="grey")


def _percent(axis) -> None:
    """Tick labels in percent (every selection metric is a fraction)."""
    axis.set_major_formatter(PercentFormatter(1.0))


def _baseline_line(ax, board: Leaderboard, vertical: bool = False) -> list[Line2D]:
    """The majority class always predicted, as a dotted line across the metric's axis; its legend handle,
    or nothing for tasks without a baseline."""
    baseline = board.baseline or {}
    value = baseline.get(board.metric)
    if value is None:
        return []
    (ax.axvline if vertical else ax.axhline)(value, color=BASELINE_COLOUR, ls=":", lw=1.6, zorder=1)
    label = f"always {baseline['predicts']!r}\n(majority class): {pct(value)}"
    return [Line2D([], [], color=BASELINE_COLOUR, ls=":", lw=1.6, label=label)]


# --- plots -------------------------------------------------------------------------------------

def _curves_figure(board: Leaderboard, colours: dict) -> Figure:
    """Validation metric per epoch of every trial, one panel per strategy so curves do not hide each other."""
    trials = [t for t in board.trials if t.curve]
    names = list(dict.fromkeys(t.strategy for t in trials)) or ["-"]
    cols = 2 if len(names) == 4 else min(3, len(names))
    rows = math.ceil(len(names) / cols)
    figure = Figure(figsize=(4.2 * cols + 1, 3.2 * rows + 1.3), dpi=DPI, layout="constrained")
    axes = figure.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        _curves_panel(ax, [t for t in trials if t.strategy == name], colours.get(name, "grey"), name)
        baseline = _baseline_line(ax, board)  # the same legend handle from every panel
    for ax in axes[len(names):]:
        ax.set_visible(False)
    if not trials:
        _empty(axes[0], "no trial recorded a learning curve")
    cut = [Line2D([], [], color="grey", ls="--", marker="x", ms=8, label="pruned (x: where cut)")]
    handles = [Line2D([], [], color=colours[n], lw=2.5, label=n) for n in names if n in colours]
    handles += (cut if any(t.state == "pruned" for t in trials) else []) + baseline
    if handles:
        figure.legend(handles=handles, loc="outside right center", fontsize=9, title="strategy")
    figure.suptitle(f"Learning curves: validation {board.metric} per epoch ({len(trials)} trials)")
    figure.supxlabel("epoch")
    figure.supylabel(f"validation {board.metric}")
    return figure


def _curves_panel(ax, trials: list, colour, name: str) -> None:
    for t in trials:
        style = {"complete": "-", "pruned": "--"}.get(t.state, ":")
        ax.plot(range(1, len(t.curve) + 1), t.curve, style, color=colour, lw=1.6, alpha=0.7, marker="o", ms=3)
        if t.state == "pruned":
            ax.plot(len(t.curve), t.curve[-1], "x", color=colour, ms=9, mew=2)
    ax.set_title(f"{name} ({len(trials)} trial{'s' * (len(trials) != 1)})", fontsize=10, color=colour)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _percent(ax.yaxis)
    ax.tick_params(labelbottom=True, labelleft=True)
    ax.grid(alpha=0.3)


def _pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The trials no cheaper trial beats: the best metric reachable within each compute."""
    front, best = [], -math.inf
    for compute, score in sorted(points, key=lambda p: (p[0], -p[1])):
        if score > best:
            front.append((compute, score))
            best = score
    return front


def _dodge(points: list[tuple[float, float]], step: float = 8.0) -> list[float]:
    """A horizontal offset in points for each of several trials at the same spot, so all stay visible."""
    groups: dict[tuple, list[int]] = {}
    for i, (x, y) in enumerate(points):
        groups.setdefault((round(x, 6), round(y, 6)), []).append(i)
    offsets = [0.0] * len(points)
    for members in groups.values():
        for rank, i in enumerate(members):
            offsets[i] = step * (rank - (len(members) - 1) / 2)
    return offsets


def _pareto_figure(board: Leaderboard, colours: dict) -> Figure:
    """Each trial's best validation metric against its compute, with the Pareto front as a step line."""
    figure, ax = new_figure()
    trials = [t for t in board.trials if not is_missing(t.val)]
    points = [(t.compute, t.val) for t in trials if t.val is not None]  # every trial's: None is missing
    for t, dx in zip(trials, _dodge(points), strict=True):
        ax.scatter(t.compute, t.val, color=colours[t.strategy], marker=MARKERS.get(t.state, "s"), s=60,
                   alpha=0.85, edgecolors="black", linewidths=0.5, zorder=3,
                   transform=offset_copy(ax.transData, figure, x=dx, units="points"))
    front = _pareto_front(points)
    if trials:  # points drawn with an offset transform do not autoscale the axes by themselves
        ax.update_datalim(points)
        ax.autoscale_view()
    if front:
        xs, ys = zip(*front, strict=True)
        right = max(t.compute for t in trials)
        ax.step([*xs, right], [*ys, ys[-1]], where="post", color="black", lw=1.5, alpha=0.6, zorder=2)
    else:
        _empty(ax, "no trial has a validation score")
    states = [Line2D([], [], color="grey", marker=MARKERS.get(s, "s"), ls="", ms=8, label=s)
              for s in dict.fromkeys(t.state for t in trials)]
    states += [Line2D([], [], color="black", lw=1.5, label="Pareto front")] if front else []
    states += _baseline_line(ax, board)
    _percent(ax.yaxis)
    _strategy_legend(ax, colours, dict.fromkeys(t.strategy for t in trials), states, loc="best")
    ax.set_xlim(left=0)
    ax.margins(x=0.06, y=0.08)
    ax.set(title=f"Best validation {board.metric} vs compute, per trial (side by side: same value)",
           xlabel="compute (training-epoch equivalents)", ylabel=f"best validation {board.metric}")
    ax.grid(alpha=0.3)
    return figure


def _value_limits(arms: list[Arm], baseline: float | None) -> tuple[float, float, tuple[float, float] | None]:
    """x-limits around the intervals and the baseline; a metric within [0, 1] keeps its bars inside [0, 1]."""
    values = [v for a in arms for v in (a.ci_low, a.ci_high, *a.scores) if not is_missing(v)] or [0.0, 1.0]
    values += [] if baseline is None else [baseline]
    low, high = min(values), max(values)
    bounds = (0.0, 1.0) if all(0 <= v <= 1 for a in arms for v in a.scores) else None
    if bounds:
        low, high = max(low, 0.0), min(high, 1.0)
    pad = max(high - low, 0.02) * 0.06
    return low - pad, high + pad, bounds


def _leaderboard_figure(board: Leaderboard, colours: dict) -> Figure:
    """Each arm's mean with its 95% interval, best on top; per-seed scores as small dots."""
    figure, ax = new_figure(9, 1.6 + 0.7 * max(len(board.arms), 2))
    left, right, bounds = _value_limits(board.arms, (board.baseline or {}).get(board.metric))
    clipped = False
    for row, arm in enumerate(board.arms):
        y = len(board.arms) - 1 - row
        clipped |= _leaderboard_row(ax, arm, y, colours, board.winner, bounds)
    ax.set_yticks(range(len(board.arms)), [_arm_label(a, board.winner) for a in reversed(board.arms)])
    ax.set_xlim(left, right)
    ax.set_ylim(-0.6, len(board.arms) - 0.4)
    note = " (arrows: interval goes past [0, 1]; numbers at right are the full interval)" if clipped else ""
    ax.set(title=f"Arms: mean validation {board.metric} with 95% interval", xlabel=f"validation {board.metric}{note}")
    _percent(ax.xaxis)
    baseline = _baseline_line(ax, board, vertical=True)
    if baseline:
        ax.legend(handles=baseline, fontsize=9, loc="best", framealpha=0.9)
    ax.grid(axis="x", alpha=0.3)
    if not board.arms:
        _empty(ax, "no arm completed")
    return figure


def _role(arm: Arm, winner: str) -> str:
    return " (winner)" if arm.name == winner else " (random init)" if arm.strategy == SCRATCH else ""


def _arm_label(arm: Arm, winner: str) -> str:
    seeds = f"{len(arm.seeds)} seed{'s' * (len(arm.seeds) != 1)}"
    return f"{arm.name}{knob_text(arm.knobs)}{_role(arm, winner)}\nlr {_rate(arm.lr)}, {seeds}"


def _leaderboard_row(ax, arm: Arm, y: float, colours: dict, winner: str, bounds: tuple | None) -> bool:
    """One arm's row; True when its interval was clipped to the metric's bounds."""
    colour = colours.get(arm.strategy, "grey")
    if arm.strategy == SCRATCH:
        ax.axhspan(y - 0.45, y + 0.45, color="#ffe9a8", alpha=0.6, zorder=0)
    ax.scatter(arm.scores, [y] * len(arm.scores), color=colour, alpha=0.35, s=25, zorder=2)
    clipped = False
    if not (is_missing(arm.ci_low) or is_missing(arm.ci_high)) and arm.ci_high > arm.ci_low:
        low, high = (max(arm.ci_low, bounds[0]), min(arm.ci_high, bounds[1])) if bounds else (arm.ci_low, arm.ci_high)
        ax.hlines(y, low, high, color=colour, lw=2.5, zorder=3)
        for end, true_end, arrow in ((low, arm.ci_low, "<"), (high, arm.ci_high, ">")):
            cut = end != true_end
            ax.plot(end, y, marker=arrow if cut else "|", color=colour, ms=10 if cut else 14, mew=2.5, zorder=3)
            clipped |= cut
    marker, size = ("*", 320) if arm.name == winner else ("o", 90)
    ax.scatter([arm.mean], [y], color=colour, marker=marker, s=size, edgecolors="black", zorder=4)
    ax.annotate(arm_score(arm), (1.01, y), xycoords=("axes fraction", "data"), va="center", fontsize=9)
    return clipped


def _versus_scratch_figure(board: Leaderboard, colours: dict) -> Figure:
    """The arm compared with scratch and scratch: each seed's score, the mean and its 95% interval; the
    answer about pretraining in the title. Seeds are not joined: seed k of one arm shares nothing with
    seed k of another."""
    pretrained, scratch = _versus_arm(board), _scratch_arm(board)
    assert pretrained is not None and scratch is not None, "write_report plots this only when both ran"
    figure, ax = new_figure(7.5, 5.6)
    for x, arm in ((0, pretrained), (1, scratch)):
        colour = colours[arm.strategy]
        ax.scatter([x - 0.12] * len(arm.scores), arm.scores, color=colour, s=50, alpha=0.6, zorder=3)
        if not (is_missing(arm.ci_low) or is_missing(arm.ci_high)) and arm.ci_high > arm.ci_low:
            ax.vlines(x + 0.08, arm.ci_low, arm.ci_high, color=colour, lw=2.5, zorder=3)
        ax.hlines(arm.mean, x - 0.02, x + 0.18, color=colour, lw=4, zorder=4)
        ax.annotate(arm_score(arm), (x + 0.22, arm.mean), va="center", fontsize=9)
    handles = _baseline_line(ax, board)
    if handles:
        ax.legend(handles=handles, fontsize=9, loc="best", framealpha=0.9)
    ax.set_xticks([0, 1], [f"{pretrained.name}\n(pretrained)", "scratch\n(random init)"])
    ax.set_xlim(-0.5, 1.75)
    ax.margins(y=0.1)
    ax.set_title("Pretrained vs scratch (dots: seeds; bar: mean; line: 95% interval)\n"
                 + textwrap.fill(scratch_sentence(board), 80), fontsize=10)
    ax.set_ylabel(f"best validation {board.metric}")
    _percent(ax.yaxis)
    ax.grid(axis="y", alpha=0.3)
    return figure


# --- text ------------------------------------------------------------------------------------

def _details(board: Leaderboard) -> list[str]:
    states = [t.state for t in board.trials]
    counts = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
    return [f"Model: {board.model}", f"Data: {board.data}", f"Budget: {board.budget}",
            f"Compute spent: {board.compute:.1f} training-epoch equivalents over {len(board.trials)} trials"
            + (f" ({counts})" if counts else ""),
            f"Time: {_duration(board.seconds)}", f"Run folder: {board.run_dir}"]


def _differences(board: Leaderboard) -> list[str]:
    lines = [f"How the winner was picked: {board.pick['rule']}."] if board.pick.get("rule") else []
    for diff, label in ((board.runner_up, "the next pretrained arm"), (board.versus_scratch, "the scratch baseline")):
        if diff:
            of = diff.get("of", board.winner)
            lines.append(f"{of} vs {diff['versus']} ({label}): {in_points(diff)}, {verdict(diff)}.")
    return lines


def _arms_table(board: Leaderboard) -> tuple:
    headers = ["strategy", "lr", "seeds", f"validation {board.metric} [95% CI]", f"test {board.metric} (seed-0 run)",
               "cost (epochs per run)", "trainable"]
    rows = []
    for arm in board.arms:
        name = arm.name + knob_text(arm.knobs) + _role(arm, board.winner)
        rows.append([name, _rate(arm.lr), ", ".join(map(str, arm.seeds)), arm_score(arm),
                     pct((arm.test or {}).get(board.metric)), num(arm.cost, 2) if arm.cost else "-",
                     count(arm.trainable_params) if arm.trainable_params else "-"])
    baseline = board.baseline or {}
    value = baseline.get(board.metric)
    if value is not None:
        rows.append([f"always {baseline['predicts']!r} (majority class)", "-", "-", pct(value), "-", "0", "0"])
    return "table", headers, rows, [False, True, False, True, True, True, True]


def _probe_note(board: Leaderboard) -> list[tuple]:
    """An older leaderboard's test figure for the linear probe, when it came from another run than an arm's."""
    probe = next((a for a in board.arms if a.strategy == PROBE_STRATEGY), None)
    value = (board.linear_probe_test or {}).get(board.metric)
    if value is None or (probe and probe.test):
        return []
    return [("p", f"Test {board.metric} of linear_probe: {pct(value)}, from its best explore trial's run (this "
                  "older leaderboard tested that run, not an arm above).")]


def _class_table(arms: list[Arm], classes: list[str]) -> tuple:
    """Per class: its validation examples, each arm's recall and F1, and who never predicts it."""
    vals = [a.val or {} for a in arms]  # every arm here has them (_per_class_blocks)
    support = [sum(row) for row in vals[0]["confusion_matrix"]]
    headers = ["class", "examples"] + [f"{a.name} {m}" for a in arms for m in ("recall", "F1")] + ["never predicted by"]
    rows = []
    for c, name in enumerate(classes):
        cells = [pct(val[m][c]) for val in vals for m in ("recall", "f1")]
        never = [a.name for a, val in zip(arms, vals, strict=True) if c in val.get("never_predicted", [])]
        rows.append([name, str(support[c]), *cells, ", ".join(never)])
    return "table", headers, rows, [False, True, *[True] * (2 * len(arms)), False]


def _confusion_table(arm: Arm, classes: list[str]) -> tuple:
    headers = ["true \u2193 predicted \u2192", *classes]
    matrix = (arm.val or {})["confusion_matrix"]  # an arm of _per_class_blocks
    rows = [[name, *map(str, row)] for name, row in zip(classes, matrix, strict=True)]
    return "table", headers, rows, [False] + [True] * len(classes)


MAX_CONFUSION_CLASSES = 15


def _per_class_blocks(board: Leaderboard) -> list[tuple]:
    """The winner's and scratch's seed-0 run per class (classification only): recall, F1, confusion."""
    arms = [a for a in (winner_arm(board), _scratch_arm(board)) if a and a.val and "confusion_matrix" in a.val]
    arms = list({a.name: a for a in arms}.values())
    if not arms:
        return []
    classes = board.classes or [str(c) for c in range(len((arms[0].val or {})["confusion_matrix"]))]
    blocks = [("h2", "Per class"),
              ("p", "Validation, the seed-0 run of each arm. Recall: the share of a class's examples found; F1: "
                    "the balance of recall and precision."),
              _class_table(arms, classes)]
    for arm in arms if len(classes) <= MAX_CONFUSION_CLASSES else []:
        blocks += [("h3", f"Confusion matrix of {arm.name} (rows: true class, columns: predicted)"),
                   _confusion_table(arm, classes)]
    return blocks


SHOWN_GENERATIONS = 8
SHOWN_PROMPT = 160  # characters


def _generation_blocks(generations: tuple[dict, list] | None) -> list[tuple]:
    """The base model's and the winner's generations side by side, on the same validation prompts."""
    if not generations:
        return []
    base, tuned = generations
    rows = [[textwrap.shorten(b["prompt"], SHOWN_PROMPT), b["reference"].strip(), b["generated"] or "(nothing)",
             t["generated"] or "(nothing)"]
            for b, t in zip(base["examples"][:SHOWN_GENERATIONS], tuned, strict=False)]
    return [("h2", "Generations"),
            ("p", "Validation prompts, greedy decoding: the reference completion, the base model's before any "
                  "fine-tuning, and the winner's (its seed-0 run). All scored ones: base_generations.json and "
                  "model/generations.json."),
            ("table", ["prompt", "reference", "base model", "winner"], rows, [False] * 4)]


def _trials_table(board: Leaderboard) -> tuple:
    headers = ["#", "tier", "strategy", "lr", "seed", "state", f"best validation {board.metric}", "epochs",
               "compute", "reason"]
    rows = [[str(t.number), t.tier, t.strategy + knob_text(t.knobs) + (f" on {t.model}" if t.model else ""),
             _rate(t.lr), str(t.seed), t.state, pct(t.val),
             str(t.epochs_run), num(t.compute, 2), t.reason or ""] for t in board.trials]
    return "table", headers, rows, [True, False, False, True, True, False, True, True, True, False]


CAPTIONS = {
    "curves.png": "Learning curves: validation metric per epoch of every trial (pruned: dashed, x where cut; "
                  "dotted red, where shown: the majority class always predicted).",
    "pareto.png": "Best validation metric vs compute per trial; the step line is the Pareto front.",
    "leaderboard.png": "Each arm's mean with its 95% interval (dots: single seeds; star: winner; shaded: scratch; "
                       "dotted red, where shown: the majority class always predicted).",
    "pretrained_vs_scratch.png": "The arm compared with scratch and scratch: each seed's score, the mean and its "
                                 "95% interval.",
    "predictions.png": "The winning model on held-out images: its boxes (white: the truth) or its masks.",
}


def _blocks(board: Leaderboard, plots: set[str], folder: Path | None = None) -> list[tuple[Any, ...]]:
    """The report as plain blocks, rendered to Markdown and to HTML alike: the answer first."""
    generations = generations_of(folder) if folder else None
    blocks: list[tuple[Any, ...]] = [("h1", f"Search report: {board.model} on {board.data}"),
                                     ("answer", answer(board, folder))]
    blocks += [("warnings", board.warnings)] if board.warnings else []
    blocks += [("list", notes(board)), ("h2", "Search"), ("list", _details(board)),
               ("h2", "Arms"),
               ("p", f"Best first, in percent. Validation {board.metric}: the mean over seeds with its 95% interval. "
                     "Test: the seed-0 run of each arm tested (the winner, the next pretrained arm, scratch and "
                     "linear_probe), evaluated once after the decision, never used to choose."),
               _arms_table(board), *_probe_note(board)]
    differences = _differences(board)
    blocks += [("h2", "Differences"), ("list", differences)] if differences else []
    blocks += [*_per_class_blocks(board), *_generation_blocks(generations), ("h2", "Plots")]
    for name in PLOTS:
        if name in plots:
            blocks += [("image", name, CAPTIONS[name])]
        elif name == "pretrained_vs_scratch.png":
            blocks += [("p", "No scratch baseline to compare with, so there is no pretrained-vs-scratch plot.")]
    return blocks + [("h2", "All trials"), _trials_table(board)]


