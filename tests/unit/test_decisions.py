"""Decisions you can trust: intervals that carry seeds and examples, a budget that measures every
strategy, finals that compare strategies, a tie-aware pick, LP-FT never below its probe, runs that
reproduce, and a metric the majority class cannot game."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

import tunewise
import tunewise.study as study_module
from tunewise import DataConfig, TrainConfig
from tunewise.errors import ConfigError
from tunewise.records import Arm
from tunewise.stats import detectable_difference, difference_interval, mean_interval, verdict
from tunewise.strategies import default_strategies, get_strategy
from tunewise.study import SearchConfig, decision, default_budget, tiers, unmeasurable
from tunewise.tasks import get_task

CLASSIFICATION = get_task("image_classification")


def accuracy(stats: np.ndarray) -> float:
    return CLASSIFICATION.metric_from_stats(stats, "accuracy")


def seeds_of(rate: float, examples: int = 200, seeds: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Per-example (true, predicted) of `seeds` models that are each right with probability `rate`."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 2, examples)
    return [np.stack([true, np.where(rng.random(examples) < rate, true, 1 - true)], 1) for _ in range(seeds)]


# --- intervals ------------------------------------------------------------------------------------

def test_intervals_stay_inside_the_metric_range_and_carry_the_examples_noise():
    perfect = seeds_of(1.0, examples=9, seeds=1)
    mean, low, high = mean_interval(perfect, accuracy)
    assert mean == high == 1.0 and 0.6 < low < 0.75  # every resample is 100%; 9 of 9 is no certainty (Wilson)
    mean, low, high = mean_interval(seeds_of(0.9, examples=30, seeds=2), accuracy)
    assert 0.0 <= low < mean < high <= 1.0
    assert high - low > 0.1  # 30 examples cannot pin an accuracy near 90% to within 10 points


def test_a_real_gain_is_significant_and_noise_is_not():
    true_gain = difference_interval(seeds_of(0.9, seed=1), seeds_of(0.6, seed=1), accuracy)
    assert true_gain[1] > 0 and verdict(*true_gain, seeds=3)[0]
    noise = difference_interval(seeds_of(0.75, seed=2), seeds_of(0.75, seed=2)[::-1], accuracy)
    assert noise[1] <= 0 <= noise[2] and not verdict(*noise, seeds=3)[0]


def test_one_seed_or_a_zero_width_interval_is_never_significant():
    assert verdict(0.3, 0.2, 0.4, seeds=1) == (False, "cannot tell: one seed shows nothing of the variation "
                                                      "between seeds")
    assert not verdict(0.1, 0.1, 0.1, seeds=3)[0]


def test_the_smallest_detectable_difference_shrinks_with_more_examples():
    small = detectable_difference(seeds_of(0.8, examples=50, seeds=1)[0], accuracy)
    large = detectable_difference(seeds_of(0.8, examples=2000, seeds=1)[0], accuracy)
    assert 0.15 < small < 0.4 and large < small / 4  # about 2.8 * sqrt(2) * sqrt(p(1-p)/n)
    perfect = detectable_difference(seeds_of(1.0, examples=9, seeds=1)[0], accuracy)
    assert perfect > 0.3  # 9 right answers out of 9 cannot detect a 30-point difference


# --- per-example statistics reproduce each task's own metric ----------------------------------------

def test_classification_statistics_give_the_same_metrics():
    logits = [torch.randn(20, 4), torch.randn(13, 4)]
    targets = [torch.randint(0, 4, (20,)), torch.randint(0, 4, (13,))]
    direct = CLASSIFICATION.metrics(logits, targets)
    stats = CLASSIFICATION.example_stats(logits, targets)
    for name in CLASSIFICATION.metrics_names:
        assert CLASSIFICATION.metric_from_stats(stats, name) == pytest.approx(direct[name])


def test_token_classification_statistics_give_seqeval_scores():
    task = get_task("token_classification")
    task.classes = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    torch.manual_seed(0)
    logits = [torch.randn(6, 9, 5), torch.randn(4, 7, 5)]
    targets = [torch.randint(0, 5, (6, 9)), torch.randint(0, 5, (4, 7))]
    targets[0][:, -2:] = -100  # padding is not scored
    direct = task.metrics(logits, targets, None)
    stats = task.example_stats(logits, targets)
    assert stats.shape == (10, 5)
    for name in task.metrics_names:
        assert task.metric_from_stats(stats, name) == pytest.approx(direct[name])


def test_segmentation_statistics_give_the_same_miou():
    from types import SimpleNamespace

    task = get_task("semantic_segmentation")
    data = SimpleNamespace(classes=["bg", "a", "b"])
    predicted = [torch.randint(0, 3, (2, 8, 8), dtype=torch.uint8)]
    true = [torch.randint(0, 3, (2, 8, 8))]
    true[0][0, 0, :4] = 255  # ignored pixels
    direct = task.metrics(predicted, true, data)
    stats = task.example_stats(predicted, true, data)
    assert task.metric_from_stats(stats, "miou") == pytest.approx(direct["miou"])
    assert task.metric_from_stats(stats, "pixel_accuracy") == pytest.approx(direct["pixel_accuracy"])


# --- the budget ----------------------------------------------------------------------------------

def test_the_default_budget_measures_every_strategy_and_a_small_one_says_what_it_drops():
    config = SearchConfig(epochs=4, seeds=3)
    config = SearchConfig(epochs=4, seeds=3, budget=default_budget(config))
    assert unmeasurable(config) == []
    tight = SearchConfig(epochs=4, seeds=3, budget=f"{study_module.reserved_cost(config) + 3:g}epochs")
    dropped = unmeasurable(tight)
    assert "linear_probe" not in dropped and dropped == [s for s in default_strategies() if s in dropped]
    assert len(dropped) >= 7  # 3 epochs after the finals and scratch: the probe, bitfit and one more at most


def test_the_budget_warning_leaves_out_what_the_model_refuses_and_gives_its_share_to_the_rest(caplog):
    """A search warns before it starts which strategies its --budget cannot measure. One the model refuses
    is never run: it is not named, and the grace epochs it would have had go to the next arms."""
    from tunewise.strategies import in_search_order
    from tunewise.study.budget import least_cost

    config = SearchConfig(epochs=4, seeds=3)
    tight = SearchConfig(epochs=4, seeds=3, budget=f"{study_module.reserved_cost(config) + 3:g}epochs")
    dropped = unmeasurable(tight)
    paid = next(s for s in in_search_order(tight.strategies) if s not in dropped and least_cost(s, tight) >= 1)
    with caplog.at_level("WARNING", logger="tunewise"):
        study_module._warn_before(tight, 1, True, "accuracy", {paid: "cannot adapt this model"})
    warning = next(r.getMessage() for r in caplog.records if "leaves no room to measure" in r.getMessage())
    named = warning.split("room to measure ")[1].split(" (even")[0].split(", ")
    assert paid not in named and dropped[0] not in named and set(named) < set(dropped)


def test_a_running_trial_leaves_the_waiting_arms_their_grace_epochs(tmp_path):
    """On the NER benchmark one strong arm ran on to its end and the last arm of the queue (lp_ft
    at its top rate, the grid's best cell) was skipped for lack of budget."""
    from tunewise.study.budget import least_cost, reserve, waiting_grace

    config = SearchConfig(strategies=("full", "lora"), epochs=3, rates=2, seeds=1, scratch=False, budget="40epochs")
    study = optuna.create_study(direction="maximize")
    for strategy in ("full", "lora"):
        study.enqueue_trial({"strategy": strategy, "lr": 1e-3}, user_attrs={"tier": "explore"})
    running = study.ask()  # takes the first waiting trial (full): lora waits
    assert waiting_grace(study, config, cacheable=True) == least_cost("lora", config) == 1
    keep = lambda: waiting_grace(study, config, cacheable=True)  # noqa: E731
    lock = tmp_path / "budget.lock"
    assert reserve(study, running, "epochs", 3.0, allowance=4.0, lock=lock, keep_free=keep)
    assert not reserve(study, running, "epochs", 3.5, allowance=4.0, lock=lock, keep_free=keep)
    assert reserve(study, running, "epochs", 3.5, allowance=4.0, lock=lock)  # without: lora would lose its grace
    # a budget that cannot give every waiting arm its grace anyway holds nothing back (depth first, as before)
    assert reserve(study, running, "epochs", 3.8, allowance=3.8, lock=lock, keep_free=keep)


# --- finalists and the pick ------------------------------------------------------------------------

def _explore(strategy: str, state: TrialState, value: float, number_attrs: dict | None = None, lr: float = 1e-3):
    return create_trial(
        state=state, value=value if state == TrialState.COMPLETE else None,
        params={"strategy": strategy, "lr": lr},
        distributions={"strategy": CategoricalDistribution(tiers.strategy_choices()),
                       "lr": FloatDistribution(1e-12, 1e6, log=True)},
        user_attrs={"tier": "explore", "seed": 0, "epochs": 4, **(number_attrs or {})},
        intermediate_values={0: value * 0.9, 1: value})


def test_finalists_are_two_strategies_even_when_only_one_completed():
    study = optuna.create_study(direction="maximize")
    study.add_trial(_explore("linear_probe", TrialState.COMPLETE, 0.7))
    study.add_trial(_explore("linear_probe", TrialState.COMPLETE, 0.6))
    study.add_trial(_explore("full", TrialState.PRUNED, 0.5))
    study.add_trial(_explore("lora", TrialState.PRUNED, 0.65))
    finalists = tiers.finalists(study, 2)
    assert [t.params["strategy"] for t in finalists] == ["linear_probe", "lora"]
    tiers.enqueue_finals(study, SearchConfig(seeds=3, epochs=4))
    waiting = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    # the probe's explore run is its seed 0; the pruned lora run is re-run in full on every seed
    assert sorted((t.system_attrs["fixed_params"]["strategy"], t.user_attrs["seed"]) for t in waiting) == [
        ("linear_probe", 1), ("linear_probe", 2), ("lora", 0), ("lora", 1), ("lora", 2)]


def test_a_finalist_best_at_the_end_of_its_range_gets_one_rate_past_it():
    study = optuna.create_study(direction="maximize")
    for lr, value in ((1e-4, 0.50), (1e-3, 0.60), (1e-2, 0.70)):  # full: the top rate is best
        study.add_trial(_explore("full", TrialState.COMPLETE, value, lr=lr))
    for lr, value in ((1e-3, 0.55), (3e-3, 0.65), (1e-2, 0.60)):  # lora: the middle rate is best
        study.add_trial(_explore("lora", TrialState.COMPLETE, value, lr=lr))
    for lr, value in ((1e-3, 0.62), (1e-2, 0.40)):  # linear_probe: best at the bottom, but not a finalist
        study.add_trial(_explore("linear_probe", TrialState.COMPLETE, value, lr=lr))
    config = SearchConfig(epochs=4, rates=3, finalists=2)
    assert tiers.enqueue_past_edges(study, config) == 1
    waiting = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert [(t.system_attrs["fixed_params"]["strategy"], t.user_attrs["past_edge"]) for t in waiting] == [
        ("full", "above")]
    assert waiting[0].system_attrs["fixed_params"]["lr"] == pytest.approx(1e-1)
    assert waiting[0].user_attrs["tier"] == "explore" and waiting[0].user_attrs["seed"] == 0
    assert tiers.enqueue_past_edges(study, config) == 0  # once per search
    # the bottom edge too; a single rate says nothing of where the best lies
    low = optuna.create_study(direction="maximize")
    for lr, value in ((1e-4, 0.70), (1e-3, 0.60)):
        low.add_trial(_explore("full", TrialState.COMPLETE, value, lr=lr))
    assert tiers.enqueue_past_edges(low, SearchConfig(epochs=4, rates=2, finalists=1)) == 1
    assert low.get_trials()[-1].system_attrs["fixed_params"]["lr"] == pytest.approx(1e-5)
    one = optuna.create_study(direction="maximize")
    one.add_trial(_explore("full", TrialState.COMPLETE, 0.7))
    assert tiers.enqueue_past_edges(one, SearchConfig(epochs=4, rates=1)) == 0
    # the run without augmentation repeats the best rate alone: the rates tried with it say where the range ends
    plain = optuna.create_study(direction="maximize")
    for lr, value in ((1e-4, 0.50), (1e-3, 0.60)):
        plain.add_trial(_explore("partial", TrialState.COMPLETE, value, lr=lr))
    plain.add_trial(_explore("partial", TrialState.COMPLETE, 0.65, {"augment": False}, lr=1e-3))
    assert tiers.enqueue_past_edges(plain, SearchConfig(epochs=4, rates=2, finalists=1)) == 1
    queued = plain.get_trials()[-1]
    assert queued.system_attrs["fixed_params"]["lr"] == pytest.approx(1e-2) and queued.user_attrs["augment"] is False


def _arm(tmp_path, name: str, rate: float, cost: float, seed: int) -> Arm:
    dirs = []
    for i, stats in enumerate(seeds_of(rate, examples=300, seed=seed)):
        folder = tmp_path / f"{name}-{i}"
        folder.mkdir()
        np.save(folder / "val_examples.npy", stats)
        dirs.append(str(folder))
    scores = [accuracy(np.load(f"{d}/val_examples.npy")) for d in dirs]
    return Arm(strategy=name, lr=1e-3, seeds=[0, 1, 2], scores=scores, mean=float(np.mean(scores)), ci_low=0,
               ci_high=1, run_dirs=dirs, cost=cost)


def test_the_pick_takes_the_cheapest_arm_that_cannot_be_told_from_the_best(tmp_path):
    judge = decision.Judge(CLASSIFICATION, "accuracy")
    # the same examples (seed 5) and the same skill: only the seeds' noise separates them
    best, cheap = _arm(tmp_path, "full", 0.80, cost=4, seed=5), _arm(tmp_path, "linear_probe", 0.80, 0.33, seed=5)
    best.scores, best.mean = [s + 0.01 for s in best.scores], best.mean + 0.01
    picked, pick = decision.pick_winner([best, cheap], None, judge)
    assert picked is cheap and pick["tied"] == ["linear_probe"] and pick["best_by_mean"] == "full"
    same_cost = _arm(tmp_path, "bitfit", 0.80, cost=4, seed=5)
    assert decision.pick_winner([best, same_cost], None, judge)[0] is best  # not cheaper: the better mean stays
    clear = _arm(tmp_path, "lora", 0.95, cost=4, seed=5)
    picked, pick = decision.pick_winner([clear, cheap], None, judge)
    assert picked is clear and pick["tied"] == []


class _Differences:
    """A judge whose paired differences are given: (best, other) -> (mean, low, high)."""

    def __init__(self, table: dict) -> None:
        self.table = table

    def difference(self, a: Arm, b: Arm) -> dict:
        mean, low, high = self.table[(a.strategy, b.strategy)]
        return {"mean": mean, "ci_low": low, "ci_high": high, "se": (high - low) / (2 * 1.96),
                "significant": low > 0 or high < 0}


def _scored(strategy: str, mean: float, cost: float) -> Arm:
    return Arm(strategy=strategy, lr=1e-3, seeds=[0, 1, 2], scores=[mean] * 3, mean=mean, ci_low=0, ci_high=1,
               run_dirs=[], cost=cost)


def test_a_cheaper_arm_replaces_the_best_only_within_one_standard_error():
    best, probe = _scored("lp_ft", 0.70, cost=3), _scored("linear_probe", 0.65, cost=0.33)
    # a lead of 4.7 points, interval [-0.9, +10.9]: not significant, but 1.6 standard errors (3.0 points each)
    lead = _Differences({("lp_ft", "linear_probe"): (0.047, -0.009, 0.109)})
    picked, pick = decision.pick_winner([best, probe], None, lead)
    assert picked is best and pick["tied"] == [] and "one-standard-error" in pick["rule"]
    # a lead of 2 points with the same interval width: within one standard error, the cheaper arm
    small = _Differences({("lp_ft", "linear_probe"): (0.02, -0.039, 0.079)})
    assert decision.pick_winner([best, probe], None, small)[0] is probe


# --- LP-FT, reproducibility, the metric -------------------------------------------------------------

FAST = TrainConfig(epochs=2, batch_size=8, num_workers=0, patience=None)


def _data(folder) -> DataConfig:
    return DataConfig(data=str(folder), image_size=32)


def test_lp_ft_starts_at_its_probe_and_never_ends_below_it(image_folder, tiny_weights, tmp_path):
    strategy = get_strategy("lp_ft", probe_epochs=4, probe_lr=0.05)
    record = tunewise.fit("timm:test_resnet", _data(image_folder), strategy, train=FAST, weights=tiny_weights,
                          out=tmp_path / "run", lr=0.05)  # a rate high enough to hurt
    probe = tunewise.RunRecord.load(tmp_path / "run" / "probe" / "record.json")
    assert record.start_val == pytest.approx(probe.val_score)  # same preprocessing, same statistics
    assert record.val_score >= probe.val_score - 1e-9
    assert record.compute == pytest.approx(record.epochs_run + probe.compute, abs=1e-3)  # the probe is paid for


def test_lp_ft_keeps_the_pretrained_batchnorm_statistics():
    from tunewise.strategies.freezing import set_train_mode

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    set_train_mode(model, keep_statistics=True)
    assert model[0].training and not model[1].training
    before = model[1].running_mean.clone()
    model(torch.randn(4, 3, 8, 8) + 5)
    assert torch.equal(model[1].running_mean, before)


@pytest.mark.parametrize("strategy", ["scratch", "full"])
def test_the_same_settings_give_the_same_numbers_in_fit_and_in_search(strategy, image_folder, tiny_weights,
                                                                      tmp_path):
    data = _data(image_folder)
    config = SearchConfig(strategies=("full",), epochs=2, rates=1, seeds=1, finalists=1, scratch_epochs=2,
                          budget="12epochs", scratch=strategy == "scratch")
    board = tunewise.search("timm:test_resnet", data, config, train=FAST, out=tmp_path / "search",
                            weights=tiny_weights)
    trial = next(t for t in board.trials if t.strategy == strategy and t.state == "complete" and t.seed == 0
                 and t.augment)
    alone = tunewise.fit("timm:test_resnet", data, strategy, train=FAST, weights=tiny_weights, lr=trial.lr,
                         out=tmp_path / "alone", test=False)
    assert alone.curve == pytest.approx(trial.curve, abs=1e-6)


def test_imbalanced_classes_select_on_macro_f1(tmp_path, tiny_weights):
    from conftest import write_image_folder

    folder = write_image_folder(tmp_path / "img", per_class=12)
    for extra in range(12, 40):  # "red" becomes the majority
        (folder / "red" / f"{extra:03d}.png").write_bytes((folder / "red" / "000.png").read_bytes())
    record = tunewise.fit("timm:test_resnet", _data(folder), "linear_probe", train=FAST, weights=tiny_weights,
                          out=tmp_path / "run")
    assert record.metric == "macro_f1" and "imbalanced" in record.metric_reason
    assert record.baseline["predicts"] == "red" and record.baseline["macro_f1"] < record.baseline["accuracy"]
    asked = tunewise.fit("timm:test_resnet", _data(folder), "linear_probe", train=FAST, weights=tiny_weights,
                         out=tmp_path / "asked", metric="accuracy")
    assert asked.metric == "accuracy"
    with pytest.raises(ConfigError, match="--metric 'f1' is not a metric of image_classification"):
        tunewise.fit("timm:test_resnet", _data(folder), "linear_probe", train=FAST, weights=tiny_weights,
                     out=tmp_path / "bad", metric="f1")


def test_a_seed_only_difference_may_be_negative(tmp_path):
    """Detection has no per-example statistics: its differences are t-intervals over seeds, which
    must not be clipped to a metric's [0, 1] (a real loss would read as an interval of no width)."""
    judge = decision.Judge(get_task("object_detection"), "map")
    worse = Arm(strategy="full", lr=1e-3, seeds=[0, 1, 2], scores=[0.40, 0.42, 0.41], mean=0.41, ci_low=0,
                ci_high=1, run_dirs=[])
    better = Arm(strategy="linear_probe", lr=1e-3, seeds=[0, 1, 2], scores=[0.50, 0.51, 0.53], mean=0.513,
                 ci_low=0, ci_high=1, run_dirs=[])
    diff = judge.difference(worse, better)
    assert diff["ci_low"] < diff["ci_high"] < 0 and diff["significant"]


def test_a_search_started_before_strategies_were_added_goes_on_with_its_own_choices(tmp_path):
    # Optuna's storages refuse a categorical that changes (order included): resume and --worker depend on it
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    assert tiers.strategy_choices() == [*default_strategies(), "scratch"]
    earlier = [s for s in tiers.strategy_choices() if s not in ("dora", "ia3", "vera")]  # before 0e56387
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "study.journal")))  # the search's own storage
    study = optuna.create_study(storage=storage, direction="maximize")
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.5, params={"strategy": "full"},
                                 distributions={"strategy": CategoricalDistribution(earlier)}))
    study.enqueue_trial({"strategy": "lora"})
    trial = study.ask()
    with pytest.raises(ValueError):  # what resume did with today's list
        trial.suggest_categorical("strategy", tiers.strategy_choices())
    assert tiers.strategy_choices(study) == earlier
    assert trial.suggest_categorical("strategy", tiers.strategy_choices(study)) == "lora"
