"""write_report(): plots, Markdown and HTML from a Leaderboard alone; no torch needed."""

from __future__ import annotations

import ast
import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tunewise.records import Arm, Leaderboard, TrialRecord
from tunewise.report import search_report
from tunewise.report.search_report import rebuild, write_report

PLOTS = ["curves.png", "pareto.png", "leaderboard.png", "pretrained_vs_scratch.png"]


def _trial(number, tier, strategy, lr, seed, curve, state="complete", reason=None, compute=None) -> TrialRecord:
    return TrialRecord(number=number, tier=tier, strategy=strategy, lr=lr, seed=seed, state=state, reason=reason,
                       epochs_run=len(curve), compute=len(curve) if compute is None else compute, seconds=1.5,
                       val=max(curve) if curve else None, curve=curve, run_dir=f"/runs/{number}" if curve else None)


def _arm(strategy, lr, scores, ci=None, test=None) -> Arm:
    mean = sum(scores) / len(scores)
    low, high = ci or (mean, mean)
    return Arm(strategy=strategy, lr=lr, seeds=list(range(len(scores))), scores=scores, mean=mean, ci_low=low,
               ci_high=high, run_dirs=[f"/runs/{strategy}{s}" for s in range(len(scores))], test=test)


def _board(scratch: bool = True) -> Leaderboard:
    """Two pretrained arms, a scratch arm, a pruned and a failed trial; or, without scratch, a 1-seed runner-up."""
    trials = [
        _trial(0, "explore", "lora", 1e-3, 0, [0.60, 0.72, 0.80]),
        _trial(1, "explore", "full", 1e-4, 0, [0.55, 0.70, 0.78, 0.81]),
        _trial(2, "explore", "lora", 1e-2, 0, [0.30, 0.32], state="pruned",
               reason="pruned after epoch 2: validation 0.32 <below> the rung's top third & cut"),
        _trial(3, "explore", "full", 1e-2, 0, [], state="fail", reason="loss became NaN | diverged"),
        _trial(4, "final", "lora", 1e-3, 1, [0.62, 0.74, 0.83]),
        _trial(5, "final", "lora", 1e-3, 2, [0.58, 0.70, 0.79]),
        _trial(6, "explore", "linear_probe", 3e-2, 0, [0.50, 0.55, 0.56], compute=1.0),
    ]
    if scratch:
        trials += [_trial(7 + i, "scratch", "scratch", 3e-3, i, [0.3, 0.45, 0.5 + 0.02 * i, 0.55])
                   for i in range(3)]
        arms = [_arm("lora", 1e-3, [0.80, 0.83, 0.79], (0.75, 0.86), {"accuracy": 0.81, "macro_f1": 0.8}),
                _arm("full", 1e-4, [0.81, 0.78, 0.77], (0.72, 0.85)),
                _arm("scratch", 3e-3, [0.55, 0.55, 0.55], (0.55, 0.55), {"accuracy": 0.52})]
        runner_up = {"versus": "full", "seeds": [0, 1, 2], "mean": 0.02, "ci_low": -0.05, "ci_high": 0.09}
        versus_scratch = {"versus": "scratch", "seeds": [0, 1, 2], "mean": 0.257, "ci_low": 0.2, "ci_high": 0.31}
    else:
        arms = [_arm("lora", 1e-3, [0.80, 0.83, 0.79], (0.75, 0.86)), _arm("full", 1e-4, [0.81])]
        arms[1].seeds = [5]  # no seed in common with the winner: the paired interval is NaN
        runner_up = {"versus": "full", "seeds": [], "mean": 0.0, "ci_low": math.nan, "ci_high": math.nan}
        versus_scratch = None
    return Leaderboard(run_dir="/runs", model="timm:test_resnet", data="/data/<imgs>", metric="accuracy",
                       budget="20epochs", trials=trials, arms=arms, winner="lora", runner_up=runner_up,
                       versus_scratch=versus_scratch, linear_probe_test={"accuracy": 0.5} if scratch else None,
                       compute=sum(t.compute for t in trials), seconds=125.0)


def _images_in_html(text: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', text)


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


def test_html_links_each_image_and_escapes_text(full_report):
    folder, _ = full_report
    text = (folder / "report.html").read_text()
    assert sorted(_images_in_html(text)) == sorted(PLOTS)
    assert all((folder / name).is_file() for name in _images_in_html(text))
    assert "&lt;below&gt;" in text and "&amp; cut" in text and "<below>" not in text
    assert "/data/&lt;imgs&gt;" in text


def test_markdown_states_the_decision_and_lists_every_strategy(full_report):
    folder, _ = full_report
    text = (folder / "report.md").read_text()
    assert "Pick lora" in text
    for strategy in ("lora", "full", "scratch", "linear_probe"):
        assert f"| {strategy}" in text
    assert "not significant at 95%" in text  # the runner-up's interval [-0.05, 0.09] includes 0
    assert "difference +0.257, 95% CI [+0.200, +0.310] over 3 paired seeds: significant at 95%" in text
    assert "loss became NaN \\| diverged" in text  # a pipe in a reason does not break the table
    for name in PLOTS:
        assert f"]({name})" in text
    assert len([line for line in text.splitlines() if re.match(r"\| \d+ \|", line)]) == 10  # every trial


def test_without_scratch_the_report_says_so_and_skips_that_plot(tmp_path):
    (tmp_path / "pretrained_vs_scratch.png").write_bytes(b"stale")
    written = write_report(_board(scratch=False), tmp_path)
    assert "pretrained_vs_scratch.png" not in {p.name for p in written}
    assert not (tmp_path / "pretrained_vs_scratch.png").exists()
    markdown, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    assert "no scratch baseline was run" in markdown and "No scratch baseline to compare with" in markdown
    assert "No scratch baseline to compare with" in page
    assert "pretrained_vs_scratch.png" not in markdown + page
    assert "no seeds in common" in markdown  # the NaN interval is named, not printed as nan
    assert "- (1 seed)" in markdown and not re.search(r"\bnan\b", markdown)
    for name in ("curves.png", "pareto.png", "leaderboard.png"):
        with Image.open(tmp_path / name) as image:
            image.verify()


def test_rebuild_from_saved_leaderboard_writes_the_same_files(tmp_path):
    board = _board(scratch=False)
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


def test_when_scratch_wins_the_report_says_pretraining_lost(tmp_path):
    board = _board()
    board.arms = [board.arms[2], board.arms[0], board.arms[1]]  # scratch first: best mean
    board.arms[0].scores, board.arms[0].mean = [0.9, 0.9, 0.9], 0.9
    board.winner = "scratch"
    board.versus_scratch = {"versus": "scratch", "seeds": [0, 1, 2], "mean": -0.09, "ci_low": -0.12,
                            "ci_high": -0.06}
    written = {p.name for p in write_report(board, tmp_path)}
    assert "pretrained_vs_scratch.png" in written
    markdown = (tmp_path / "report.md").read_text()
    assert "training from scratch beats every pretrained arm" in markdown
    assert "(lora - scratch)" in markdown  # the comparison is with the best pretrained arm
