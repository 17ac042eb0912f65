"""write_report() and print_leaderboard(): plots, Markdown, HTML and the terminal from a Leaderboard alone."""

from __future__ import annotations

import ast
import base64
import importlib.util
import io
import json
import math
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

import tunewise.report
from tunewise.records import Arm, Leaderboard, TrialRecord
from tunewise.report import answer, print_leaderboard, search_report
from tunewise.report.search_report import rebuild, write_report

PLOTS = ["curves.png", "pareto.png", "leaderboard.png", "pretrained_vs_scratch.png"]
CLASSES = ["shirt", "dress", "bag"]
BOOTSTRAP = "pigeonhole bootstrap over seeds and validation examples (Owen 2007), 95%"


def _trial(number, tier, strategy, lr, seed, curve, state="complete", reason=None, compute=None) -> TrialRecord:
    return TrialRecord(number=number, tier=tier, strategy=strategy, lr=lr, seed=seed, state=state, reason=reason,
                       epochs_run=len(curve), compute=len(curve) if compute is None else compute, seconds=1.5,
                       val=max(curve) if curve else None, curve=curve, run_dir=f"/runs/{number}" if curve else None)


def _val(confusion: list[list[int]]) -> dict:
    """Seed-0 validation metrics the way classification records them."""
    support, claimed = [sum(r) for r in confusion], [sum(c) for c in zip(*confusion, strict=True)]
    recall = [confusion[c][c] / support[c] for c in range(3)]
    f1 = [2 * confusion[c][c] / (support[c] + claimed[c]) for c in range(3)]
    return {"confusion_matrix": confusion, "recall": recall, "f1": f1,
            "never_predicted": [c for c in range(3) if claimed[c] == 0]}


def _arm(strategy, lr, scores, ci=None, test=None, **extra) -> Arm:
    mean = sum(scores) / len(scores)
    low, high = ci or (mean, mean)
    return Arm(strategy=strategy, lr=lr, seeds=list(range(len(scores))), scores=scores, mean=mean, ci_low=low,
               ci_high=high, run_dirs=[f"/runs/{strategy}{s}" for s in range(len(scores))], test=test, **extra)


def _difference(of, versus, mean, low, high, significant, verdict) -> dict:
    return {"versus": versus, "of": of, "seeds": [3, 3], "mean": mean, "ci_low": low, "ci_high": high,
            "significant": significant, "verdict": verdict}


def _trials(scratch: bool) -> list[TrialRecord]:
    trials = [
        _trial(0, "explore", "lora", 1e-3, 0, [0.60, 0.72, 0.80]),
        _trial(1, "explore", "full", 1e-4, 0, [0.55, 0.70, 0.78, 0.81]),
        _trial(2, "explore", "lora", 1e-2, 0, [0.30, 0.32], state="pruned",
               reason="pruned after epoch 2: validation 0.32 <below> the rung's top third & cut"),
        _trial(3, "explore", "full", 1e-2, 0, [], state="fail", reason="loss became NaN | diverged"),
        _trial(4, "final", "lora", 1e-3, 1, [0.62, 0.74, 0.83]),
        _trial(5, "final", "lora", 1e-3, 2, [0.58, 0.70, 0.79]),
        _trial(6, "explore", "linear_probe", 3e-2, 0, [0.50, 0.55, 0.56], compute=1.0),
        _trial(7, "explore", "adapter", 1e-3, 0, [], state="skipped", reason="the budget ran out before it"),
    ]
    return trials + [_trial(8 + i, "scratch", "scratch", 3e-3, i, [0.3, 0.45, 0.5 + 0.02 * i, 0.55])
                     for i in range(3) if scratch]


def _board() -> Leaderboard:
    """A search as decide() records it now: full best by mean, lora tied with it and cheaper, so lora is
    picked; pretraining beats scratch significantly; scratch never predicts `bag`; adapter never ran."""
    arms = [_arm("full", 1e-4, [0.81, 0.82, 0.80], (0.76, 0.86), cost=4.0, trainable_params=4_000_000),
            _arm("lora", 1e-3, [0.80, 0.83, 0.79], (0.75, 0.86), {"accuracy": 0.81}, cost=3.0,
                 trainable_params=60_000, val=_val([[30, 5, 5], [4, 28, 8], [3, 2, 35]])),
            _arm("linear_probe", 3e-2, [0.56], (0.49, 0.63), {"accuracy": 0.5}, cost=1.0, trainable_params=2_000),
            _arm("scratch", 3e-3, [0.55, 0.56, 0.54], (0.50, 0.60), {"accuracy": 0.52}, cost=6.0,
                 trainable_params=4_000_000, val=_val([[35, 5, 0], [20, 20, 0], [25, 15, 0]]))]
    return Leaderboard(
        run_dir="/runs", model="timm:test_resnet", data="/data/<imgs>", metric="accuracy", budget="20epochs",
        trials=_trials(scratch=True), arms=arms, winner="lora",
        runner_up=_difference("lora", "full", -0.003, -0.05, 0.04, False, "cannot tell apart at 95%"),
        versus_scratch=_difference("lora", "scratch", 0.257, 0.20, 0.31, True, "significant at 95%"),
        linear_probe_test={"accuracy": 0.5}, compute=40.0, seconds=125.0,
        metric_reason="accuracy, because the classes are balanced",
        pick={"rule": "the one-standard-error rule: the cheapest arm within one standard error of the best",
              "best_by_mean": "full", "tied": ["lora"], "picked": "lora"},
        interval_method=BOOTSTRAP, detectable=0.061, unmeasured={"adapter": "the budget ran out before it"},
        baseline={"predicts": "shirt", "accuracy": 0.333, "macro_f1": 0.167, "balanced_accuracy": 0.333},
        classes=CLASSES, seeds=3, warnings=["scratch never predicts the class bag on validation"])


def _old_board_json(folder: Path, scratch: bool = True) -> Path:
    """leaderboard.json as searches wrote it before the new fields: paired seed lists, no verdicts."""
    raw = asdict(_board())
    for key in ("metric_reason", "pick", "interval_method", "detectable", "unmeasured", "baseline", "classes",
                "seeds", "warnings"):
        del raw[key]
    for arm in raw["arms"]:
        for key in ("augment", "cost", "trainable_params", "val"):
            del arm[key]
    raw["trials"] = [asdict(t) for t in _trials(scratch)]
    dropped = {"linear_probe"} | (set() if scratch else {"scratch"})
    raw["arms"] = [a for a in raw["arms"] if a["strategy"] not in dropped]
    raw["winner"] = "full"
    raw["runner_up"] = {"versus": "lora", "seeds": [0, 1, 2], "mean": 0.003, "ci_low": -0.05, "ci_high": 0.06}
    raw["versus_scratch"] = {"versus": "scratch", "seeds": [0, 1, 2], "mean": 0.26, "ci_low": 0.2,
                             "ci_high": 0.31} if scratch else None
    raw["linear_probe_test"] = {"accuracy": 0.47}
    (folder / "leaderboard.json").write_text(json.dumps(raw))
    return folder


def _paragraphs(markdown: str) -> list[str]:
    return [p for p in markdown.split("\n\n") if p.strip()]


def _terminal(board: Leaderboard, monkeypatch) -> list[str]:
    console = Console(file=io.StringIO(), width=1000, record=True)
    monkeypatch.setattr(tunewise.report, "console", console)
    print_leaderboard(board)
    return [line.rstrip() for line in console.export_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    return folder, write_report(_board(), folder)


def test_every_file_is_written_and_each_plot_is_a_real_image(full_report):
    folder, written = full_report
    assert sorted(p.name for p in written) == sorted([*PLOTS, "report.md", "report.html"])
    for path in written:
        assert path.parent == folder and path.stat().st_size > 0
    for name in PLOTS:
        with Image.open(folder / name) as image:
            assert image.format == "PNG"
            assert 500 <= image.width <= 3000 and 300 <= image.height <= 3000
            image.verify()
    assert not list(folder.glob(".*.tmp"))  # the atomic writes left no temporary files


def test_the_three_answers_come_first_in_markdown_and_name_what_was_not_measured(full_report):
    folder, _ = full_report
    paragraphs = _paragraphs((folder / "report.md").read_text())
    assert paragraphs[0].startswith("# Search report")
    assert paragraphs[1:4] == [f"**{sentence}**" for sentence in answer(_board())]
    first, scratch, unmeasured = answer(_board())
    assert first.startswith("full and lora score within one standard error of each other; picked the cheaper, "
                            "lora at lr 0.001 (validation accuracy 80.7% [75.0, 86.0])")
    assert scratch == ("Pretraining beat training from scratch: lora vs scratch, +25.7 points [+20.0, +31.0] of "
                       "validation accuracy (significant at 95%, 3 and 3 seeds).")
    assert unmeasured == "Not measured: adapter \u2014 the budget ran out before it."
    board = _board()
    board.unmeasured = {"adapter": "budget spent", "l2sp": "budget spent", "lp_ft": "loss became NaN"}
    assert answer(board)[2] == "Not measured: adapter and l2sp \u2014 budget spent; lp_ft \u2014 loss became NaN."
    assert paragraphs[4] == "- **Warning:** scratch never predicts the class bag on validation"
    reading = paragraphs[5]
    assert "Selected on validation accuracy, because the classes are balanced." in reading
    assert "cannot tell apart differences smaller than about 6.1 points" in reading
    assert BOOTSTRAP in reading and "Always answering 'shirt' (the majority class) scores 33.3%" in reading
    assert not any(p.startswith("|") for p in paragraphs[:6])  # no table before the answer and its reading


def test_the_terminal_ends_with_the_same_three_sentences(monkeypatch):
    lines = _terminal(_board(), monkeypatch)
    assert lines[-3:] == answer(_board())
    assert any("WARNING: scratch never predicts the class bag" in line for line in lines)
    assert any("always 'shirt' (majority class)" in line and "33.3%" in line for line in lines)
    assert any("lora (winner)" in line and "80.7% [75.0, 86.0]" in line and "81.0%" in line
               for line in lines)


def test_html_is_self_contained_and_escapes_text(full_report):
    folder, _ = full_report
    text = (folder / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert len(sources) == len(PLOTS)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'<img src="[^"]*\.png"', text)
    for source in sources:
        with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as image:
            assert image.format == "PNG"
    assert "&lt;below&gt;" in text and "&amp; cut" in text and "<below>" not in text
    assert "/data/&lt;imgs&gt;" in text
    assert text.index('class="answer"') < text.index("<table>")


def test_drawn_predictions_are_embedded_too(tmp_path):
    Image.new("RGB", (40, 30), "white").save(tmp_path / "predictions.png")
    write_report(_board(), tmp_path)
    text = (tmp_path / "report.html").read_text()
    assert len(re.findall(r'<img src="data:image/png;base64,', text)) == len(PLOTS) + 1
    assert "The winning model on held-out images" in text


def test_values_are_percent_and_differences_points(full_report):
    folder, _ = full_report
    markdown = (folder / "report.md").read_text()
    assert "| lora (winner) | 0.001 | 0, 1, 2 | 80.7% [75.0, 86.0] | 81.0% | 3.00 | 60.0k |" in markdown
    assert "| always 'shirt' (majority class) | - | - | 33.3% |" in markdown
    assert "lora vs full (the next pretrained arm): -0.3 points [-5.0, +4.0], cannot tell apart at 95%" in markdown
    assert not re.search(r"\b0\.(807|257|81|333)\b", markdown)  # no metric left as a fraction


def test_per_class_view_of_the_winner_and_scratch_flags_a_class_never_predicted(full_report):
    folder, _ = full_report
    markdown = (folder / "report.md").read_text()
    assert "### Confusion matrix of lora" in markdown and "### Confusion matrix of scratch" in markdown
    assert "| shirt | 30 | 5 | 5 |" in markdown  # rows: true class
    assert "| bag | 40 | 87.5% | 79.5% | 0.0% | 0.0% | scratch |" in markdown


def test_the_linear_probe_has_one_test_figure_from_its_arm(full_report):
    folder, _ = full_report
    markdown = (folder / "report.md").read_text()
    assert "| linear_probe | 0.03 | 0 | 56.0% [49.0, 63.0] | 50.0% |" in markdown
    assert "best explore trial" not in markdown  # the record's figure is this arm's: said once
    assert "test accuracy (seed-0 run)" in markdown


def test_a_difference_that_is_not_significant_is_never_called_significant(tmp_path, monkeypatch):
    board = _board()
    board.versus_scratch = _difference("lora", "scratch", 0.03, -0.02, 0.08, False, "cannot tell apart at 95%")
    board.arms[3].seeds, board.arms[3].scores = [0], [0.77]
    board.versus_scratch |= {"seeds": [3, 1], "verdict": "cannot tell: one seed shows nothing of the variation "
                                                          "between seeds"}
    write_report(board, tmp_path)
    sentence = answer(board)[1]
    assert sentence.startswith("Pretraining and training from scratch cannot be told apart: lora vs scratch, "
                               "+3.0 points [-2.0, +8.0]")
    for text in ((tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text(),
                 "\n".join(_terminal(board, monkeypatch))):
        assert "significant" not in text


def test_an_old_leaderboard_still_renders(tmp_path, monkeypatch):
    board = Leaderboard.load(_old_board_json(tmp_path) / "leaderboard.json")
    written = rebuild(tmp_path)
    assert {p.name for p in written} == {*PLOTS, "report.md", "report.html"}
    markdown = (tmp_path / "report.md").read_text()
    first, scratch, unmeasured = _paragraphs(markdown)[1:4]
    assert first.startswith("**full at lr 0.0001 won (validation accuracy 81.0% [76.0, 86.0]); over the next, "
                            "lora: +0.3 points [-5.0, +6.0], no verdict recorded")
    assert scratch.startswith("**Pretraining vs training from scratch: full vs scratch, +26.0 points [+20.0, +31.0]")
    assert "does not record unmeasured strategies" in unmeasured
    assert "significant" not in markdown and "(majority class)" not in markdown and "Per class" not in markdown
    assert "Test accuracy of linear_probe: 47.0%, from its best explore trial's run" in markdown
    assert not re.search(r"\bnan\b", markdown)
    assert _terminal(board, monkeypatch)[-3:] == answer(board)


def test_without_scratch_the_report_says_so_and_skips_that_plot(tmp_path):
    (tmp_path / "pretrained_vs_scratch.png").write_bytes(b"stale")
    board = _board()
    board.arms, board.versus_scratch = board.arms[:3], None
    board.runner_up = {**board.runner_up, "ci_low": math.nan, "ci_high": math.nan}
    written = write_report(board, tmp_path)
    assert "pretrained_vs_scratch.png" not in {p.name for p in written}
    assert not (tmp_path / "pretrained_vs_scratch.png").exists()
    markdown, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    assert "Pretraining vs training from scratch was not measured: no scratch baseline ran." in markdown
    assert "No scratch baseline to compare with" in markdown and "No scratch baseline to compare with" in page
    assert "pretrained_vs_scratch.png" not in markdown + page
    assert "-0.3 points (no interval)" in markdown and not re.search(r"\bnan\b", markdown)


def test_when_scratch_wins_the_report_says_pretraining_lost(tmp_path):
    board = _board()
    scratch = board.arms.pop(3)
    scratch.scores, scratch.mean, scratch.ci_low, scratch.ci_high = [0.9, 0.9, 0.9], 0.9, 0.87, 0.93
    board.arms.insert(0, scratch)
    board.winner, board.versus_scratch = "scratch", None
    board.pick = {"rule": "scratch beat the best pretrained arm significantly", "best_by_mean": "scratch",
                  "tied": [], "picked": "scratch"}
    written = {p.name for p in write_report(board, tmp_path)}
    assert "pretrained_vs_scratch.png" in written
    first, second, _ = answer(board)
    assert first == ("scratch at lr 0.003 won (validation accuracy 90.0% [87.0, 93.0]): scratch beat the best "
                     "pretrained arm significantly.")
    assert second.startswith("Training from scratch won over pretraining: scratch 90.0% [87.0, 93.0] against full")


def test_the_baseline_is_a_line_in_the_plots_only_when_recorded():
    board = _board()
    colours = search_report._colours(board)
    for draw in (search_report._leaderboard_figure, search_report._curves_figure):
        lines = [line for ax in draw(board, colours).axes for line in ax.lines]
        assert any(line.get_color() == search_report.BASELINE_COLOUR for line in lines)
    board.baseline = None
    lines = search_report._leaderboard_figure(board, colours).axes[0].lines
    assert not any(line.get_color() == search_report.BASELINE_COLOUR for line in lines)


def test_rebuild_from_saved_leaderboard_writes_the_same_files(tmp_path):
    board = _board()
    board.save(tmp_path / "leaderboard.json")
    direct = write_report(board, tmp_path / "direct")
    rebuilt = rebuild(tmp_path)
    assert [p.name for p in rebuilt] == [p.name for p in direct]
    assert all(p.parent == tmp_path and p.stat().st_size > 0 for p in rebuilt)
    assert (tmp_path / "report.md").read_text() == (tmp_path / "direct" / "report.md").read_text()


def test_search_report_does_not_import_torch():
    """Neither directly nor through what it imports (run with tunewise/__init__, which loads torch, bypassed)."""
    tree = ast.parse(Path(search_report.__file__).read_text())
    modules = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    modules += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [m for m in modules if m.split(".")[0] == "torch"]
    package = importlib.util.find_spec("tunewise").submodule_search_locations[0]
    code = ("import sys, types; pkg = types.ModuleType('tunewise'); pkg.__path__ = [sys.argv[1]]; "
            "sys.modules['tunewise'] = pkg; import tunewise.report.search_report; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, package], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
