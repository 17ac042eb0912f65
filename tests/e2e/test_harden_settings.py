"""Issue 13, settings: every numeric flag checked up front, unknown config keys refused, a diverged
run reported and never a search's winner, and a budget that concurrent workers share.

The matrix runs in-process through the harness: a refused setting costs no training. A case whose
setting is wrongly accepted still stays short (one epoch, 32-pixel images, cached features)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pytest
import yaml
from hardening import Outcome, assert_user_error, run, snapshot

from tunewise.config import DataConfig, TrainConfig

SEED_PAST_MAX = 2**32  # numpy's seeds are unsigned 32-bit


def _cheap(image_folder: Path, tmp_path: Path) -> list[str]:
    """Before a case's own flags (argparse keeps the last): a wrongly accepted case stays short."""
    return ["--data", str(image_folder), "--epochs", "1", "--num-workers", "0", "--device", "cpu",
            "--image-size", "32", "--cache-dir", str(tmp_path / "cache")]


@dataclass(frozen=True)
class Bad:
    """A numeric flag given a value it must refuse: `shown` is how the error line repeats it."""

    flag: str
    value: str
    shown: str

    @property
    def given(self) -> str:
        """One word, as argparse needs for a value such as -inf that looks like a flag."""
        return f"{self.flag}={self.value}"


def _bad(flag: str, kind: type, *values: str) -> list[Bad]:
    return [Bad(flag, v, repr(kind(v))) for v in values]


NOT_FINITE = ("nan", "inf", "-inf")

FIT_CASES = [  # every numeric field of TrainConfig and DataConfig, as `fit` takes it
    *_bad("--epochs", int, "0", "-1"),
    *_bad("--batch-size", int, "0", "-1"),
    *_bad("--lr", float, *NOT_FINITE, "0", "-1"),
    *_bad("--weight-decay", float, *NOT_FINITE, "-1"),
    *_bad("--warmup-epochs", float, *NOT_FINITE, "-1"),
    *_bad("--patience", int, "-1"),  # 0 is "never stop early"
    *_bad("--seed", int, "-1", str(SEED_PAST_MAX)),
    *_bad("--num-workers", int, "-1"),
    *_bad("--val-fraction", float, *NOT_FINITE, "-0.1", "1"),
    *_bad("--test-fraction", float, *NOT_FINITE, "-0.1", "1"),
    *_bad("--split-seed", int, "-1", str(SEED_PAST_MAX)),
    *_bad("--max-train-per-class", int, "0", "-1"),
    *_bad("--image-size", int, "-1", "4"),
    *_bad("--max-length", int, "-1", "4"),
    *_bad("--doc-stride", int, "0", "-1"),
]

SEARCH_CASES = [  # every numeric field of SearchConfig, and the budget's amount
    *[case for flag in ("--epochs", "--rates", "--seeds", "--finalists", "--workers", "--keep-models",
                        "--scratch-epochs") for case in _bad(flag, int, "0", "-1")],
    Bad("--budget", "0epochs", "'0epochs'"), Bad("--budget", "0s", "'0s'"), Bad("--budget", "-1epochs", "'-1epochs'"),
    Bad("--budget", "nanepochs", "'nanepochs'"), Bad("--budget", "infs", "'infs'"),
]


def _flag_field(flag: str) -> str:
    return {"--split-seed": "seed"}.get(flag, flag.removeprefix("--").replace("-", "_"))


def test_the_matrix_covers_every_numeric_field():
    """A numeric field added later without a rule, or without a case here, fails this test."""
    from tunewise.config import DATA_NUMBERS, SEARCH_NUMBERS, TRAIN_NUMBERS
    from tunewise.study.config import SearchConfig

    for cls, rules, cases in ((TrainConfig, TRAIN_NUMBERS, FIT_CASES), (DataConfig, DATA_NUMBERS, FIT_CASES),
                              (SearchConfig, SEARCH_NUMBERS, SEARCH_CASES)):
        numeric = {f.name for f in fields(cls) if str(f.type).split(" |")[0] in ("int", "float")}
        assert numeric == set(rules), cls
        assert numeric <= {_flag_field(c.flag) for c in cases}, cls


def _unchanged(before: dict[Path, str], *folders: Path) -> None:
    """Every file that was there before is byte-identical (new files, such as a feature cache, may appear)."""
    after = snapshot(*folders)
    assert {path: after.get(path) for path in before} == before


@pytest.fixture
def target(tmp_path):
    """A folder holding a user's file, where the run folder would go: it must stay as it was."""
    folder = tmp_path / "target"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    return folder


@pytest.mark.parametrize("case", FIT_CASES, ids=lambda c: c.given)
def test_fit_refuses_a_bad_number_up_front(capsys, image_folder, tmp_path, target, case):
    before = snapshot(target)
    outcome = run(capsys, "fit", *_cheap(image_folder, tmp_path), case.given, "--out", target / "run")
    assert_user_error(outcome, [case.flag, f"got {case.shown}"])
    assert not (target / "run").exists()
    _unchanged(before, target)


@pytest.mark.parametrize("case", SEARCH_CASES, ids=lambda c: c.given)
def test_search_refuses_a_bad_number_up_front(capsys, image_folder, tmp_path, target, case):
    before = snapshot(target)
    outcome = run(capsys, "search", *_cheap(image_folder, tmp_path), "--strategies", "linear_probe", "--rates", "1",
                  "--seeds", "1", "--no-scratch", case.given, "--out", target / "run")
    assert_user_error(outcome, [case.flag, case.shown])
    assert not (target / "run").exists()
    _unchanged(before, target)


def test_every_problem_is_named_in_one_line(capsys, image_folder, tmp_path):
    """Several bad numbers: one error line naming each, so they are fixed in one go."""
    outcome = run(capsys, "fit", *_cheap(image_folder, tmp_path), "--warmup-epochs", "nan", "--split-seed", "-1",
                  "--lr", "inf", "--out", tmp_path / "run")
    assert_user_error(outcome, ["--warmup-epochs", "--split-seed", "--lr"])


@pytest.mark.parametrize(("argv", "says"), [
    (["fit", "--epochs=nan"], "argument --epochs: must be an integer, got 'nan'"),
    (["rank", "--models", "pkg:efficientnet_lite0", "--verify=-1"],  # verified every candidate but the last
     "argument --verify: must be 0 (no fine-tuning) or more, got '-1'"),
    (["rank", "--models", "pkg:efficientnet_lite0", "--max-examples=0"],
     "argument --max-examples: must be a positive integer, got '0'"),
])
def test_a_number_that_is_no_config_field_is_refused_by_the_parser(capsys, image_folder, tmp_path, argv, says):
    """int('nan') fails in argparse's own type check, as do the ranges of rank's own flags: argparse's
    one-line error, exit 2."""
    with pytest.raises(SystemExit) as stop:
        run(capsys, *argv, "--data", image_folder, "--out", tmp_path / "run")
    err = capsys.readouterr().err
    assert stop.value.code == 2 and says in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


# --- a YAML config (`fit --config`, a search's best.yaml): unknown keys and bad values -----------

def _best_yaml(image_folder: Path, tmp_path: Path) -> dict:
    """What a search's best.yaml holds, cheap to run."""
    return {"model": "pkg:efficientnet_lite0", "weights": None, "task": "image_classification",
            "strategy": "linear_probe", "knobs": {},
            "data": {"data": str(image_folder), "image_size": 32},
            "train": {"epochs": 1, "num_workers": 0, "device": "cpu", "cache_dir": str(tmp_path / "cache")}}


def _edit(settings: dict, path: str, value: object) -> dict:
    """`settings` with the key at `path` ("train.lrr") set to `value`, or removed when value is DROP."""
    *parents, key = path.split(".")
    part = settings
    for name in parents:
        part = part[name]
    if value is DROP:
        del part[key]
    else:
        part[key] = value
    return settings


DROP = object()

CONFIG_CASES = {
    "unknown-top-level-key": ("lerning_rate", 0.1, ["'lerning_rate'", "allowed", "model", "strategy", "train"]),
    "misspelt-top-level-key": ("strategyy", "full", ["'strategyy'", "did you mean 'strategy'"]),
    "unknown-train-key": ("train.lrr", 0.1, ["'lrr'", "train", "did you mean 'lr'", "allowed", "warmup_epochs"]),
    "unknown-data-key": ("data.val_frac", 0.2, ["'val_frac'", "data", "did you mean 'val_fraction'"]),
    "missing-model": ("model", DROP, ["'model'", "model, strategy, data and train"]),
    "train-not-a-mapping": ("train", 3, ["train", "mapping", "3"]),
    "knobs-not-a-mapping": ("knobs", [1], ["knobs", "mapping"]),
    "nan-warmup": ("train.warmup_epochs", math.nan, ["best.yaml", "--warmup-epochs", "nan"]),
    "nan-epochs": ("train.epochs", math.nan, ["--epochs", "an integer", "nan"]),
    "float-epochs": ("train.epochs", 2.5, ["--epochs", "an integer", "2.5"]),
    "negative-split-seed": ("data.seed", -1, ["--split-seed", "-1"]),
    "unknown-device": ("train.device", "tpu", ["--device", "'tpu'", "cpu"]),
}


@pytest.mark.parametrize("name", list(CONFIG_CASES))
def test_fit_config_refuses_unknown_keys_and_bad_values(capsys, image_folder, tmp_path, target, name):
    key, value, words = CONFIG_CASES[name]
    config = target / "best.yaml"
    config.write_text(yaml.safe_dump(_edit(_best_yaml(image_folder, tmp_path), key, value)))
    before = snapshot(target)
    outcome = run(capsys, "fit", "--config", config, "--out", target / "run")
    assert_user_error(outcome, words)
    assert not (target / "run").exists()
    _unchanged(before, target)


def test_a_run_with_an_edited_settings_file_is_not_resumed(capsys, image_folder, tmp_path):
    """settings.json is read the same way: a key that no setting has is named, the folder untouched."""
    folder = tmp_path / "run"
    assert run(capsys, "fit", *_cheap(image_folder, tmp_path), "--out", folder).code == 0
    settings = json.loads((folder / "settings.json").read_text())
    settings["train"]["bacth_size"] = 8
    (folder / "settings.json").write_text(json.dumps(settings))
    before = snapshot(folder)
    assert_user_error(run(capsys, "fit", "--resume", folder), ["'bacth_size'", "did you mean 'batch_size'"])
    _unchanged(before, folder)


# --- divergence ------------------------------------------------------------------------------------

def _fit_lr(capsys, image_folder: Path, tmp_path: Path, lr: str) -> tuple[Outcome, dict]:
    folder = tmp_path / f"lr{lr}"
    outcome = run(capsys, "fit", *_cheap(image_folder, tmp_path), "--epochs", "3", "--batch-size", "8",
                  "--lr", lr, "--out", folder)
    return outcome, json.loads((folder / "record.json").read_text())


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings logged (the CLI prints them to stderr; pytest's capture of logging takes them first)."""
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_a_diverged_fit_warns_in_one_line_and_says_so_in_its_record(capsys, caplog, image_folder, tmp_path):
    """lr 1000 on a linear probe: the loss grows by orders of magnitude each epoch, without a NaN."""
    outcome, record = _fit_lr(capsys, image_folder, tmp_path, "1000")
    assert outcome.code == 0 and "Traceback" not in outcome.err
    warned = [line for line in _warnings(caplog) if "diverged" in line]
    assert len(warned) == 1 and "\n" not in warned[0] and "--lr" in warned[0], _warnings(caplog)
    assert "training loss rose" in record["diverged"]


def test_a_run_that_learns_is_not_called_diverged(capsys, caplog, image_folder, tmp_path):
    outcome, record = _fit_lr(capsys, image_folder, tmp_path, "0.01")
    assert outcome.code == 0 and not any("diverged" in line for line in _warnings(caplog))
    assert record["diverged"] is None


def test_divergence_is_a_tenfold_rise_of_the_training_loss():
    from tunewise.train import divergence

    assert divergence([2.0, 5.0, 20.0]) and divergence([1.0, math.inf]) and divergence([1.0, math.nan])
    assert not any(map(divergence, ([2.0, 19.9], [2.0, 0.1, 3.0], [0.0, 0.0], [2.0], [])))


def test_a_search_never_picks_a_diverged_run(image_folder, tmp_path, monkeypatch):
    """Two rates of a linear probe: 0.05 learns the colours, 1e-9 cannot move. The rule is made to
    call the run that learns diverged: the search must pass it over and say so."""
    from tunewise import train
    from tunewise.records import Leaderboard
    from tunewise.strategies import STRATEGIES
    from tunewise.study import SearchConfig, search

    monkeypatch.setattr(STRATEGIES.get("linear_probe"), "rate_range", (1e-9, 0.05))
    monkeypatch.setattr(train, "divergence", lambda losses: "learnt" if losses[-1] < 0.9 * losses[0] else None)
    config = SearchConfig(strategies=("linear_probe",), epochs=2, rates=2, seeds=1, scratch=False, budget="5epochs")
    data = DataConfig(data=str(image_folder), image_size=32)
    board = search("pkg:efficientnet_lite0", data, config, out=tmp_path / "search",
                   train=TrainConfig(num_workers=0, device="cpu", batch_size=8))
    states = {t.lr: t.state for t in board.trials}
    past = set(states) - {0.05, 1e-9}  # 1e-9, the best that did not diverge, is an end of the range: one rate past it
    assert {lr: states[lr] for lr in (0.05, 1e-9)} == {0.05: "diverged", 1e-9: "complete"} and len(past) <= 1
    assert 0.05 not in [a.lr for a in board.arms] and board.winner == "linear_probe"
    assert any("diverged" in w and "0.05" in w for w in board.warnings)
    assert "diverged" in (tmp_path / "search" / "report.md").read_text()
    assert Leaderboard.load(tmp_path / "search" / "leaderboard.json") == board


# --- the budget, shared by concurrent workers --------------------------------------------------------

def _fake_fit(epoch_seconds: float):
    """fit_trial without training: each epoch sleeps, then asks should_stop, as fit() does."""
    import time

    from tunewise.records import RunRecord

    def fit_trial(run: dict, should_stop) -> RunRecord:
        epochs, ran, stopped = run["train"]["epochs"], 0, None
        for epoch in range(epochs):
            time.sleep(epoch_seconds)
            ran = epoch + 1
            if should_stop(epoch, 0.5):
                stopped = "pruned"
                break
        Path(run["out"]).mkdir(parents=True, exist_ok=True)
        return RunRecord(run_dir=run["out"], model="m", arch="a", strategy=run["strategy"], task="t", data="d",
                         classes=[], metric="accuracy", best_epoch=0, epochs_run=ran, val={"accuracy": 0.5},
                         test=None, seconds=ran * epoch_seconds, trainable_params=1, total_params=1,
                         stopped=stopped, compute=float(ran))

    return fit_trial


def _explore_spent(folder: Path) -> float:
    from tunewise.study.workers import open_study

    return sum(t.user_attrs.get("compute", 0.0) for t in open_study(folder).get_trials()
               if t.user_attrs.get("tier") == "explore")


def test_two_workers_never_spend_more_than_the_explore_tier_has(tmp_path, monkeypatch):
    """Two workers drain one journal study, each with its own storage object as a worker process has
    (threads here, so that the faked training reaches both; spawned processes cost two torch imports).
    Both would admit a 2-epoch grace run while nothing is spent yet; with 3 epochs to spend, only one
    may run (the check without reservations let both run: 4 epochs)."""
    import threading

    from tunewise.study import workers
    from tunewise.study.config import SearchConfig
    from tunewise.study.tiers import enqueue_explore

    monkeypatch.setattr(workers, "fit_trial", _fake_fit(epoch_seconds=0.3))
    config = SearchConfig(strategies=("full", "l2sp"), epochs=3, rates=2, seeds=1, scratch=False, budget="3epochs")
    folder = tmp_path / "search"
    folder.mkdir()
    (folder / "settings.json").write_text(json.dumps({
        "model": "m", "weights": None, "task": "image_classification", "storage": None, "study": "s",
        "data": asdict(DataConfig()), "train": asdict(TrainConfig()), "search": asdict(config)}))
    enqueue_explore(workers.open_study(folder), config, ["m"], "image_classification")
    threads = [threading.Thread(target=workers.work, args=(str(folder),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 0 < _explore_spent(folder) <= 3.0 + 1e-9


@pytest.mark.slow
def test_a_search_with_two_worker_processes_stays_within_its_budget(image_folder, tmp_path):
    """The real thing: `search --workers 2` on tiny data, a journal storage, trials that train the
    backbone (without reservations it spent 5.0 of 4.0 epochs; 3 to 7.5 minutes on 2 shared CPU
    cores: opt-in with -m slow)."""
    import subprocess
    import sys

    folder = tmp_path / "search"
    done = subprocess.run(
        [sys.executable, "-m", "tunewise", "search", "--model", "pkg:efficientnet_lite0", "--data", str(image_folder),
         "--image-size", "32", "--strategies", "bitfit,norm_only", "--epochs", "3", "--rates", "2", "--seeds", "1",
         "--no-scratch", "--budget", "4epochs", "--batch-size", "8", "--num-workers", "0", "--device", "cpu",
         "--workers", "2", "--out", str(folder)], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 0 < _explore_spent(folder) <= 4.0 + 1e-9
