"""A search's report from its `Leaderboard` alone: four PNG plots, `report.md` and `report.html`.

Nothing here imports torch: `tunewise report RUN_DIR` can rebuild a report on any machine.
Plots use matplotlib's object API (`Figure`), never pyplot: no global state, no display needed.
"""

from __future__ import annotations

import html
import math
import textwrap
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import offset_copy

from tunewise.io import write_atomic
from tunewise.records import Arm, Leaderboard
from tunewise.report import knob_text

PLOTS = ("curves.png", "pareto.png", "leaderboard.png", "pretrained_vs_scratch.png", "predictions.png")
SCRATCH = "scratch"
SCRATCH_COLOUR = "#333333"
MARKERS = {"complete": "o", "pruned": "v", "fail": "X"}
DPI = 120


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
    written = [_save_figure(figure, folder / name) for name, figure in plots.items()]
    drawn = {"predictions.png"} if (folder / "predictions.png").is_file() else set()  # detection, segmentation
    blocks = _blocks(board, set(plots) | drawn)
    for name, render in (("report.md", _markdown), ("report.html", _html)):
        text = render(blocks)
        write_atomic(folder / name, lambda tmp, text=text: Path(tmp).write_text(text, encoding="utf-8"))
        written.append(folder / name)
    return written


# --- small helpers -----------------------------------------------------------------------------

def _winner_arm(board: Leaderboard) -> Arm | None:
    return next((a for a in board.arms if a.name == board.winner), None)


def _pretrained_arm(board: Leaderboard) -> Arm | None:
    """The best arm that starts from pretrained weights (arms are best first)."""
    return next((a for a in board.arms if a.strategy != SCRATCH), None)


def _scratch_arm(board: Leaderboard) -> Arm | None:
    return next((a for a in board.arms if a.strategy == SCRATCH), None)


def _nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _num(value, digits: int = 3) -> str:
    return "-" if _nan(value) else f"{value:.{digits}f}"


def _rate(value) -> str:
    return "-" if _nan(value) else f"{value:.3g}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{seconds:.1f} s"


def _colours(board: Leaderboard) -> dict[str, tuple]:
    """One colour per strategy, the same in every plot; scratch is always dark grey."""
    names = dict.fromkeys([a.strategy for a in board.arms] + [t.strategy for t in board.trials])
    palette = [c for i, c in enumerate(colormaps["tab10"].colors) if i != 7]  # tab10's grey is scratch's
    pretrained = [n for n in names if n != SCRATCH]
    colours = {name: palette[i % len(palette)] for i, name in enumerate(pretrained)}
    colours[SCRATCH] = SCRATCH_COLOUR
    return colours


def _strategy_legend(ax, colours: dict, names, extra: list | None = None, **kwargs) -> None:
    handles = [Line2D([], [], color=colours[n], lw=2.5, label=n) for n in names] + (extra or [])
    if handles:
        ax.legend(handles=handles, fontsize=9, framealpha=0.9, **kwargs)


def _figure(width: float = 8.5, height: float = 5.2):
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return figure, figure.subplots()


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="grey")


def _save_figure(figure: Figure, path: Path) -> Path:
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=DPI))
    return path


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
    for ax in axes[len(names):]:
        ax.set_visible(False)
    if not trials:
        _empty(axes[0], "no trial recorded a learning curve")
    cut = [Line2D([], [], color="grey", ls="--", marker="x", ms=8, label="pruned (x: where cut)")]
    handles = [Line2D([], [], color=colours[n], lw=2.5, label=n) for n in names if n in colours]
    handles += cut if any(t.state == "pruned" for t in trials) else []
    if handles:
        figure.legend(handles=handles, loc="outside right upper", fontsize=9, title="strategy")
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
    figure, ax = _figure()
    trials = [t for t in board.trials if not _nan(t.val)]
    for t, dx in zip(trials, _dodge([(t.compute, t.val) for t in trials]), strict=True):
        ax.scatter(t.compute, t.val, color=colours[t.strategy], marker=MARKERS.get(t.state, "s"), s=60,
                   alpha=0.85, edgecolors="black", linewidths=0.5, zorder=3,
                   transform=offset_copy(ax.transData, figure, x=dx, units="points"))
    front = _pareto_front([(t.compute, t.val) for t in trials])
    if trials:  # points drawn with an offset transform do not autoscale the axes by themselves
        ax.update_datalim([(t.compute, t.val) for t in trials])
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
    _strategy_legend(ax, colours, dict.fromkeys(t.strategy for t in trials), states, loc="best")
    ax.set_xlim(left=0)
    ax.margins(x=0.06, y=0.08)
    ax.set(title=f"Best validation {board.metric} vs compute, per trial (side by side: same value)",
           xlabel="compute (training-epoch equivalents)", ylabel=f"best validation {board.metric}")
    ax.grid(alpha=0.3)
    return figure


def _value_limits(arms: list[Arm]) -> tuple[float, float, tuple[float, float] | None]:
    """x-limits around the intervals; a metric within [0, 1] keeps its bars inside [0, 1] (the bounds)."""
    values = [v for a in arms for v in (a.ci_low, a.ci_high, *a.scores) if not _nan(v)] or [0.0, 1.0]
    low, high = min(values), max(values)
    bounds = (0.0, 1.0) if all(0 <= v <= 1 for a in arms for v in a.scores) else None
    if bounds:
        low, high = max(low, 0.0), min(high, 1.0)
    pad = max(high - low, 0.02) * 0.06
    return low - pad, high + pad, bounds


def _leaderboard_figure(board: Leaderboard, colours: dict) -> Figure:
    """Each arm's mean with its 95% interval, best on top; per-seed scores as small dots."""
    figure, ax = _figure(9, 1.6 + 0.7 * max(len(board.arms), 2))
    left, right, bounds = _value_limits(board.arms)
    clipped = False
    for row, arm in enumerate(board.arms):
        y = len(board.arms) - 1 - row
        clipped |= _leaderboard_row(ax, arm, y, colours, board.winner, bounds)
    ax.set_yticks(range(len(board.arms)), [_arm_label(a, board.winner) for a in reversed(board.arms)])
    ax.set_xlim(left, right)
    ax.set_ylim(-0.6, len(board.arms) - 0.4)
    note = " (arrows: interval goes past [0, 1]; numbers at right are the full interval)" if clipped else ""
    ax.set(title=f"Arms: mean validation {board.metric} with 95% interval", xlabel=f"validation {board.metric}{note}")
    ax.grid(axis="x", alpha=0.3)
    if not board.arms:
        _empty(ax, "no arm completed")
    return figure


def _role(arm: Arm, winner: str) -> str:
    return " (winner)" if arm.name == winner else " (baseline)" if arm.strategy == SCRATCH else ""


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
    if len(arm.scores) > 1 and not (_nan(arm.ci_low) or _nan(arm.ci_high)):
        low, high = (max(arm.ci_low, bounds[0]), min(arm.ci_high, bounds[1])) if bounds else (arm.ci_low, arm.ci_high)
        ax.hlines(y, low, high, color=colour, lw=2.5, zorder=3)
        for end, true_end, arrow in ((low, arm.ci_low, "<"), (high, arm.ci_high, ">")):
            cut = end != true_end
            ax.plot(end, y, marker=arrow if cut else "|", color=colour, ms=10 if cut else 14, mew=2.5, zorder=3)
            clipped |= cut
    marker, size = ("*", 320) if arm.name == winner else ("o", 90)
    ax.scatter([arm.mean], [y], color=colour, marker=marker, s=size, edgecolors="black", zorder=4)
    text = f"{_num(arm.mean)}  [{_num(arm.ci_low)}, {_num(arm.ci_high)}]" if len(arm.scores) > 1 else \
        f"{_num(arm.mean)}  (1 seed, no interval)"
    ax.annotate(text, (1.01, y), xycoords=("axes fraction", "data"), va="center", fontsize=9)
    return clipped


def _versus_scratch_figure(board: Leaderboard, colours: dict) -> Figure:
    """The best pretrained arm's and scratch's score on each seed, joined per seed; the paired difference
    in the title."""
    winner, scratch = _pretrained_arm(board), _scratch_arm(board)
    figure, ax = _figure(7.5, 5.6)
    for x, inward, arm in ((0, 1, winner), (1, -1, scratch)):  # mean bars inward, seed labels outward
        ax.scatter([x] * len(arm.scores), arm.scores, color=colours[arm.strategy], s=60, zorder=3)
        ax.hlines(arm.mean, x + 0.05 * inward, x + 0.25 * inward, color=colours[arm.strategy], lw=4, alpha=0.8,
                  zorder=4)
    _seed_pairs(ax, winner, scratch)
    ax.set_xticks([0, 1], [f"{winner.name}\n(best pretrained)", "scratch\n(random init)"])
    ax.set_xlim(-0.6, 1.6)
    ax.margins(y=0.1)
    difference = textwrap.fill(f"{winner.name} - scratch: {_difference_text(board.versus_scratch)}", 80)
    ax.set_title(f"Pretrained vs scratch, per seed (thick bars: means)\n{difference}", fontsize=10)
    ax.set_ylabel(f"best validation {board.metric}")
    ax.grid(axis="y", alpha=0.3)
    return figure


def _seed_pairs(ax, winner: Arm, scratch: Arm) -> None:
    """A grey line per seed both ran, labelled on either side (labels of equal scores stacked)."""
    common = [s for s in winner.seeds if s in scratch.seeds]
    pairs = [(winner.scores[winner.seeds.index(s)], scratch.scores[scratch.seeds.index(s)]) for s in common]
    for pair in pairs:
        ax.plot([0, 1], pair, color="grey", alpha=0.7, lw=1.2, zorder=2)
    for x, side, align in ((0, 0, "right"), (1, 1, "left")):
        offsets = _dodge([(x, p[side]) for p in pairs], step=10.0)
        for seed, pair, dy in zip(common, pairs, offsets, strict=True):
            ax.annotate(f"seed {seed}", (x, pair[side]), xytext=(-10 if x == 0 else 10, dy),
                        textcoords="offset points", ha=align, va="center", fontsize=8, color="dimgrey")


# --- text --------------------------------------------------------------------------------------

def _difference_text(paired: dict | None) -> str:
    """winner - other over their paired seeds, with its interval and whether that interval excludes 0."""
    if paired is None:
        return "no paired difference"
    mean, low, high, n = paired["mean"], paired["ci_low"], paired["ci_high"], len(paired.get("seeds") or [])
    head = f"difference {mean:+.3f}"
    if n == 0 or _nan(low) or _nan(high):
        return f"{head} of the means (no seeds in common: no interval, so not shown significant at 95%)"
    if n == 1:
        return f"{head} on 1 paired seed (no interval, so not shown significant at 95%)"
    interval = f"{head}, 95% CI [{low:+.3f}, {high:+.3f}] over {n} paired seeds"
    if low <= 0 <= high:
        return f"{interval}: the interval includes 0, so the difference is not significant at 95%"
    return f"{interval}: significant at 95%"


def _decision(board: Leaderboard) -> str:
    """The whole decision in one sentence."""
    winner = _winner_arm(board)
    if winner is None:
        return f"The search picked {board.winner}, but its arm is missing from the leaderboard."
    n = len(winner.scores)
    spread = f"95% CI [{_num(winner.ci_low)}, {_num(winner.ci_high)}] over {n} seeds" if n > 1 else \
        "1 seed, so no interval"
    parts = [f"Pick {winner.name}{knob_text(winner.knobs)} (lr {_rate(winner.lr)}): mean validation {board.metric} "
             f"{_num(winner.mean)}, {spread}"]
    if board.runner_up:
        parts.append(f"versus the runner-up {board.runner_up['versus']}: {_difference_text(board.runner_up)}")
    else:
        parts.append("there is no runner-up (a single pretrained arm)")
    parts.append(_scratch_clause(board))
    return "; ".join(parts) + "."


def _scratch_clause(board: Leaderboard) -> str:
    if _scratch_arm(board) is None:
        return "no scratch baseline was run, so pretrained vs scratch is not measured"
    best = _pretrained_arm(board)
    if best is None:
        return "no pretrained arm completed, so the pick is the scratch baseline"
    if not board.versus_scratch:
        return "no paired difference to scratch was recorded"
    verdict = "training from scratch beats every pretrained arm here; " if board.winner == SCRATCH else ""
    return (f"{verdict}pretrained vs training from scratch ({best.name} - scratch): "
            f"{_difference_text(board.versus_scratch)}")


def _details(board: Leaderboard) -> list[str]:
    states = [t.state for t in board.trials]
    counts = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
    lines = [f"Model: {board.model}", f"Data: {board.data}", f"Metric: {board.metric} (validation)",
             f"Budget: {board.budget}",
             f"Compute spent: {board.compute:.1f} training-epoch equivalents over {len(board.trials)} trials"
             + (f" ({counts})" if counts else ""),
             f"Time: {_duration(board.seconds)}", f"Run folder: {board.run_dir}"]
    winner = _winner_arm(board)
    metric = board.metric
    if winner and winner.test and metric in winner.test:
        lines.append(f"Winner's test {metric} (seed {winner.seeds[0]} model): {_num(winner.test[metric])}")
    if board.linear_probe_test and metric in board.linear_probe_test:
        probe = _num(board.linear_probe_test[metric])
        lines.append(f"Test {metric} of the best linear-probe trial (a cheap reference): {probe}")
    return lines


def _arms_table(board: Leaderboard) -> tuple:
    headers = ["strategy", "lr", "seeds", f"mean {board.metric}", "95% CI", f"test {board.metric}"]
    rows = []
    for arm in board.arms:
        ci = f"[{_num(arm.ci_low)}, {_num(arm.ci_high)}]" if len(arm.scores) > 1 else "- (1 seed)"
        test = (arm.test or {}).get(board.metric)
        seeds = ", ".join(map(str, arm.seeds))
        name = arm.name + knob_text(arm.knobs) + _role(arm, board.winner)
        rows.append([name, _rate(arm.lr), seeds, _num(arm.mean), ci, _num(test)])
    return "table", headers, rows, [False, True, False, True, False, True]


def _trials_table(board: Leaderboard) -> tuple:
    headers = ["#", "tier", "strategy", "lr", "seed", "state", "best val", "epochs", "compute", "reason"]
    rows = [[str(t.number), t.tier, t.strategy + knob_text(t.knobs) + (f" on {t.model}" if t.model else ""),
             _rate(t.lr), str(t.seed), t.state, _num(t.val),
             str(t.epochs_run), _num(t.compute, 2), t.reason or ""] for t in board.trials]
    return "table", headers, rows, [True, False, False, True, True, False, True, True, True, False]


CAPTIONS = {
    "curves.png": "Learning curves: validation metric per epoch of every trial (pruned: dashed, x where cut).",
    "pareto.png": "Best validation metric vs compute per trial; the step line is the Pareto front.",
    "leaderboard.png": "Each arm's mean with its 95% interval (dots: single seeds; star: winner; shaded: scratch).",
    "pretrained_vs_scratch.png": "Winner and scratch on each seed, joined per seed.",
    "predictions.png": "The winning model on held-out images: its boxes (white: the truth) or its masks.",
}


def _blocks(board: Leaderboard, plots: set[str]) -> list[tuple]:
    """The report as plain blocks, rendered to Markdown and to HTML alike."""
    blocks = [("h1", f"Search report: {board.model} on {board.data}"), ("list", _details(board)),
              ("h2", "Decision"), ("p", _decision(board)),
              ("h2", "Arms"), ("p", f"Best first; the mean and 95% t-interval of the best validation "
                                    f"{board.metric} over seeds."), _arms_table(board),
              ("h2", "Plots")]
    for name in PLOTS:
        if name in plots:
            blocks += [("image", name, CAPTIONS[name])]
        elif name == "pretrained_vs_scratch.png":
            blocks += [("p", "No scratch baseline to compare with, so there is no pretrained-vs-scratch plot.")]
    return blocks + [("h2", "All trials"), _trials_table(board)]


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _markdown(blocks: list[tuple]) -> str:
    out = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2"):
            out.append(f"{'#' * int(kind[1])} {rest[0]}")
        elif kind == "p":
            out.append(rest[0])
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in rest[0]))
        elif kind == "image":
            out.append(f"![{rest[1]}]({rest[0]})\n\n*{rest[1]}*")
        elif kind == "table":
            out.append(_markdown_table(*rest))
    return "\n\n".join(out) + "\n"


def _markdown_table(headers: list[str], rows: list[list[str]], right: list[bool]) -> str:
    lines = ["| " + " | ".join(map(_md_cell, headers)) + " |",
             "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]
    return "\n".join(lines)


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1150px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; vertical-align: top; }
th { background: #f2f2f2; } tr:nth-child(even) td { background: #fafafa; } td.num { text-align: right; }
figure { margin: 1.2em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
"""


def _html(blocks: list[tuple]) -> str:
    esc = html.escape
    title = next((rest[0] for kind, *rest in blocks if kind == "h1"), "Search report")
    body = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "p"):
            body.append(f"<{kind}>{esc(rest[0])}</{kind}>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in rest[0]) + "</ul>")
        elif kind == "image":
            body.append(f'<figure><img src="{esc(rest[0])}" alt="{esc(rest[1])}">'
                        f"<figcaption>{esc(rest[1])}</figcaption></figure>")
        elif kind == "table":
            body.append(_html_table(*rest))
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{esc(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


def _html_table(headers: list[str], rows: list[list[str]], right: list[bool]) -> str:
    esc = html.escape
    head = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr>"
    cells = ["<tr>" + "".join(f'<td{" class=num" * r}>{esc(c)}</td>' for c, r in zip(row, right, strict=True))
             + "</tr>" for row in rows]
    return "<table>\n" + head + "\n" + "\n".join(cells) + "\n</table>"
