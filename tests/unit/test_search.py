"""search(): picks what is best by construction, survives failing arms, kills and two workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
from conftest import past_edges, rounded
from safetensors.torch import save_file

from tunewise.config import DataConfig, TrainConfig
from tunewise.errors import TunewiseError
from tunewise.records import Leaderboard
from tunewise.strategies import STRATEGIES
from tunewise.study import SearchConfig, search
from tunewise.study.tiers import rates

TRAIN = TrainConfig(batch_size=8, num_workers=0)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "test_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("test_resnet").state_dict().items()}, str(path))
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from conftest import write_image_folder

    return DataConfig(data=str(write_image_folder(tmp_path_factory.mktemp("img"), per_class=40)), image_size=32)


@pytest.fixture(scope="module")
def board(data, weights, tmp_path_factory) -> Leaderboard:
    """linear_probe can learn the colours; `full` at a rate of 1e-9 cannot move: linear_probe is best by
    construction. `bitfit` at 1e30 diverges: its trials must fail with the reason and the search go on.
    `vera` cannot adapt a CNN: it is left out before any trial, with the reason."""
    home = tmp_path_factory.mktemp("home")
    patch = pytest.MonkeyPatch()
    patch.setenv("HOME", str(home))
    patch.setattr(STRATEGIES.get("full"), "rate_range", (1e-9, 1e-9))
    patch.setattr(STRATEGIES.get("bitfit"), "rate_range", (1e30, 1e30))
    patch.setattr(STRATEGIES.get("linear_probe"), "rate_range", (0.05, 0.05))
    try:
        config = SearchConfig(strategies=("linear_probe", "full", "bitfit", "vera"), epochs=3, rates=1, seeds=2,
                              budget="40epochs", scratch=False)
        return search("timm:test_resnet", data, config, train=TRAIN, out=home / "search", weights=weights)
    finally:
        patch.undo()


def test_search_picks_the_best_strategy_by_construction(board):
    assert board.winner == "linear_probe"
    winner = board.arms[0]
    assert winner.strategy == "linear_probe" and winner.seeds == [0, 1]
    assert winner.ci_low <= winner.mean <= winner.ci_high
    full = [t for t in board.trials if t.strategy == "full"]
    assert full and all((t.val or 0) < winner.mean for t in full)
    assert all(t.reason.startswith("pruned after epoch") for t in full if t.state == "pruned")


def test_a_diverging_arm_is_recorded_as_failed_and_the_search_goes_on(board):
    bitfit = [t for t in board.trials if t.strategy == "bitfit"]
    assert bitfit and all(t.state == "fail" and "loss became" in t.reason for t in bitfit)


def test_a_strategy_the_model_cannot_take_is_left_out_with_the_reason(board):
    assert not [t for t in board.trials if t.strategy == "vera"]
    assert "adapts Linear layers only" in board.unmeasured["vera"]


def test_test_split_is_evaluated_once_for_the_chosen_model_only(board):
    assert board.arms[0].test is not None and "accuracy" in board.arms[0].test
    for trial in board.trials:
        if trial.run_dir:
            assert json.loads((Path(trial.run_dir) / "record.json").read_text())["test"] is None


def test_outputs_and_best_yaml_reproduce_the_winner(board, tmp_path):
    from tunewise.train import fit_from_config

    folder = board.run_dir
    for name in ("leaderboard.json", "leaderboard.csv", "best.yaml", "model/model.safetensors", "report.html",
                 "report.md", "curves.png", "pareto.png", "leaderboard.png"):
        assert os.path.isfile(os.path.join(folder, name)), name
    assert Leaderboard.load(os.path.join(folder, "leaderboard.json")) == board
    again = fit_from_config(os.path.join(folder, "best.yaml"), out=tmp_path / "again")
    assert again.val_score == pytest.approx(board.arms[0].scores[0])  # seed 0, same settings: same result


def test_bad_search_settings_are_refused_before_anything_is_written(data, weights, tmp_path):
    with pytest.raises(TunewiseError, match="unknown 'linear_prob'.*Did you mean 'linear_probe'"):
        search("timm:test_resnet", data, strategies="linear_prob,full", out=tmp_path / "a")
    with pytest.raises(TunewiseError, match="cannot pay even the cheap tier"):
        search("timm:test_resnet", data, budget="0.5epochs", out=tmp_path / "b")
    with pytest.raises(TunewiseError, match="is not a budget"):
        search("timm:test_resnet", data, budget="lots", out=tmp_path / "c")
    with pytest.raises(TunewiseError, match="no strategy asked for can fine-tune this model: vera: .*Linear layers"):
        search("timm:test_resnet", data, strategies="vera", out=tmp_path / "d", weights=weights)
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_unreachable_storage_is_a_clear_error(data, weights, tmp_path):
    start = time.perf_counter()
    with pytest.raises(TunewiseError, match="cannot reach the study storage"):
        search("timm:test_resnet", data, strategies="linear_probe", out=tmp_path / "s", weights=weights,
               storage="postgresql://nobody:secret@127.0.0.1:9/none")
    assert time.perf_counter() - start < 30
    assert not (tmp_path / "s").exists()  # nothing started


def test_resume_refuses_other_data(board, data, weights, tmp_path):
    other = DataConfig(data=data.data, image_size=48)
    with pytest.raises(TunewiseError, match="another data"):
        search("timm:test_resnet", other, out=board.run_dir, resume=True, weights=weights)


def _search_cli(folder, data, weights, *extra):
    return [sys.executable, "-m", "tunewise", "search", "--model", "timm:test_resnet", "--weights", weights,
            "--data", data.data, "--image-size", "32", "--strategies", "linear_probe,full", "--epochs", "3",
            "--rates", "2", "--seeds", "1", "--no-scratch", "--budget", "40epochs", "--batch-size", "8",
            "--num-workers", "0", "--out", str(folder), *extra]


def _finished(folder) -> dict[int, tuple]:
    import optuna

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / "study.journal")))
    study = optuna.load_study(study_name=json.loads((folder / "settings.json").read_text())["study"],
                              storage=storage)
    return {t.number: (t.user_attrs["tier"], t.params["strategy"], t.params["lr"], t.user_attrs["seed"],
                       t.user_attrs.get("augment", True), t.value)
            for t in study.get_trials() if t.state.is_finished() and t.state.name != "FAIL"}


def test_killed_search_resumes_without_losing_or_repeating_trials(data, weights, tmp_path):
    folder = tmp_path / "killed"
    process = subprocess.Popen(_search_cli(folder, data, weights), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (folder / "trials").is_dir() or len(_safe_finished(folder)) < 2:
        assert process.poll() is None, "the search ended before it could be killed"
        time.sleep(0.5)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = _finished(folder)

    resumed = subprocess.run(_search_cli(folder, data, weights, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = _finished(folder)
    assert all(after[n] == before[n] for n in before)  # nothing finished was lost or changed
    runs = [value[:5] for value in after.values()]
    assert len(runs) == len(set(runs))  # nothing ran twice
    explored = {(s, rounded(lr)) for tier, s, lr, _, augment in runs if tier == "explore" and augment}
    ranged = {(s, rounded(lr)) for s in ("linear_probe", "full") for lr in rates(s, 2)}
    # every rate of each range, and for each finalist best at an end of its range one rate past it
    assert ranged <= explored and len(explored - ranged) <= 2
    assert all(lr in past_edges(rates(s, 2)) for s, lr in explored - ranged)
    assert [s for tier, s, _, _, augment in runs if not augment] == ["full"]  # the best that trains, once more


def _safe_finished(folder):
    try:
        return _finished(folder)
    except Exception:  # the journal may not exist yet
        return {}


def test_two_workers_share_one_study_without_duplicates(data, weights, tmp_path):
    done = subprocess.run(_search_cli(tmp_path / "two", data, weights, "--workers", "2"), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = [value[:5] for value in _finished(tmp_path / "two").values()]
    # 2 strategies x 2 rates, full without augmentation, and up to 2 rates past an end: each once
    assert len(runs) == len(set(runs)) and 5 <= len(runs) <= 7


def test_a_search_folder_is_a_model_folder(board, data, tmp_path):
    """predict and evaluate take the search's own folder and use its winner, in model/."""
    from tunewise.inference import evaluate, predict

    folder = Path(board.run_dir)
    image = next(Path(data.data).rglob("*.png"))
    assert predict(folder, [image]) == predict(folder / "model", [image])
    assert evaluate(folder, data, split="val") == evaluate(folder / "model", data, split="val")


def test_a_search_folder_serves_its_winner(board, data):
    from PIL import Image

    from tunewise.inference import predict
    from tunewise.ship.predictor import load_predictor

    image = next(Path(data.data).rglob("*.png"))
    served = load_predictor(board.run_dir).predict([Image.open(image).convert("RGB")])
    assert served[0]["label"] == predict(Path(board.run_dir) / "model", [image])[0]["label"]


def test_an_unfinished_search_folder_says_how_to_finish_it(tmp_path):
    from tunewise.export import model_info

    (tmp_path / "trials").mkdir()
    with pytest.raises(TunewiseError, match=r"not picked its winner yet.*search --resume --out"):
        model_info(tmp_path)


def test_search_knobs_tries_each_variant_and_keeps_the_chosen_one(data, weights, tmp_path):
    import yaml

    config = SearchConfig(strategies=("lora", "partial"), epochs=1, rates=1, seeds=1, scratch=False, knobs=True,
                          budget="20epochs")
    board = search("timm:test_resnet", data, config, train=TRAIN, out=tmp_path / "search", weights=weights)
    explored = {(t.strategy, tuple(sorted(t.knobs.items()))) for t in board.trials if t.tier == "explore"}
    assert explored == {("lora", (("r", 4),)), ("lora", (("r", 8),)), ("lora", (("r", 16),)),
                        ("partial", (("k", 1),)), ("partial", (("k", 2),)), ("partial", (("k", 4),))}
    for arm in board.arms:  # each arm is its strategy's best variant, and says which
        best = max((t for t in board.trials if t.strategy == arm.strategy and t.state == "complete"),
                   key=lambda t: t.val)
        assert arm.knobs == best.knobs
    winner = next(a for a in board.arms if a.strategy == board.winner)
    rerun = yaml.safe_load((tmp_path / "search" / "best.yaml").read_text())["knobs"]  # every knob, chosen ones too
    assert winner.knobs and rerun.items() >= winner.knobs.items()


def test_several_models_are_ranked_first_and_the_best_searched(data, tmp_path):
    """Three random-weight candidates: the ranking (cached features) keeps two, the search runs
    model x strategy on them, and arms and the winner say which model."""
    models = ["random:timm:test_resnet", "random:timm:test_vit", "random:torchvision:mobilenet_v3_small"]
    config = SearchConfig(strategies=("linear_probe", "bitfit"), epochs=1, rates=1, seeds=1, scratch=False,
                          keep_models=2, budget="20epochs")
    board = search(models, data, config, train=TRAIN, out=tmp_path / "search")
    ranking = json.loads((tmp_path / "search" / "ranking" / "ranking.json").read_text())
    kept = [c["model"] for c in ranking["candidates"]][:2]
    assert {t.model for t in board.trials} == set(kept)  # the third never fine-tuned
    assert {(t.model, t.strategy) for t in board.trials if t.tier == "explore"} == {
        (m, s) for m in kept for s in ("linear_probe", "bitfit")}
    assert board.winner == board.arms[0].name and board.arms[0].model in kept
    assert f" on {board.arms[0].model}" in board.winner
    assert json.loads((tmp_path / "search" / "settings.json").read_text())["kept"] == kept


def test_a_strategy_every_ranked_model_refuses_is_left_out(data, tmp_path):
    """With several models, a strategy that none of the kept ones can take is left out after the
    ranking, with the reason, and recorded for a resumed search."""
    models = ["random:timm:test_resnet", "random:timm:test_efficientnet"]
    config = SearchConfig(strategies=("linear_probe", "vera"), epochs=1, rates=1, seeds=1, scratch=False,
                          keep_models=2, budget="20epochs")
    board = search(models, data, config, train=TRAIN, out=tmp_path / "search")
    assert {t.strategy for t in board.trials} == {"linear_probe"}
    assert "adapts Linear layers only" in board.unmeasured["vera"]
    assert "vera" in json.loads((tmp_path / "search" / "settings.json").read_text())["refused"]
