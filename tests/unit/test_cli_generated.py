"""The CLI's flags are generated from TrainConfig, DataConfig and SearchConfig: the source read with
ast says what the dataclasses say, every field is a flag where its config is used, the flags land
in the configs, and their values are checked once, by validate_train / validate_data."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import typing

import pytest

from tunewise import cli
from tunewise.config import DataConfig, TrainConfig

HEAVY = ("torch", "torchvision", "timm", "transformers", "optuna")


def _flags(command: str) -> dict[str, str]:
    """{dest: first option string} of a subcommand's options."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {a.dest: a.option_strings[0] for a in sub._actions if a.option_strings}


def _configs():
    import importlib

    from tunewise.precheck import task_knobs
    from tunewise.study import SearchConfig

    knobs = [(module, importlib.import_module(module).Knobs) for module in sorted(set(task_knobs().values()))]
    assert knobs, "no task declares knobs: object_detection's detector should be one"
    return [("tunewise.config", TrainConfig), ("tunewise.config", DataConfig), ("tunewise.study.config", SearchConfig),
            *knobs]


def test_the_source_read_with_ast_says_what_the_dataclasses_say():
    for module, cls in _configs():
        read = cli.config_fields(module, cls.__name__)
        real = dataclasses.fields(cls)
        hints = typing.get_type_hints(cls, include_extras=False)
        assert [f.name for f in read] == [f.name for f in real], cls
        for got, want in zip(read, real, strict=True):
            assert got.doc, f"{cls.__name__}.{got.name} has no docstring: its flag would have no help"
            assert got.default == want.default, (cls, got)
            hint = hints[want.name]
            args = typing.get_args(hint)
            if typing.get_origin(hint) is typing.Literal:
                assert got.kind is str and got.choices == args, (cls, got)
            elif got.kind is not object:
                assert got.kind in (hint, *args), (cls, got, hint)


def test_the_registries_are_read_without_importing_them():
    from tunewise.strategies import STRATEGIES
    from tunewise.tasks import TASKS, all_tasks

    all_tasks()
    assert cli.task_names() == sorted(TASKS.names())
    assert cli.strategy_names() == sorted(STRATEGIES.names())


def test_building_the_parser_imports_no_torch():
    code = (f"import sys, tunewise.cli as c; c.build_parser(); heavy = [m for m in {HEAVY!r} if m in sys.modules]; "
            "print(heavy); sys.exit(bool(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_field_is_a_flag_where_its_config_is_used():
    train = {f"train.{f.name}" for f in dataclasses.fields(TrainConfig)}
    data = {f"data.{f.name}" for f in dataclasses.fields(DataConfig)}
    search = {f"search.{f.name}" for f in dataclasses.fields(_configs()[2][1])}
    assert train | data <= set(_flags("fit"))
    assert data <= set(_flags("evaluate")) and data <= set(_flags("rank"))
    searched = set(_flags("search"))
    assert search | data <= searched
    # the search's own --epochs is every run's; the fields each trial sets itself are refused, with why
    chosen = {f"train.{name}" for name in cli.SEARCH_CHOOSES}
    assert train - chosen - {"train.epochs"} <= searched and not chosen & searched
    assert {f"chosen.{name}" for name in cli.SEARCH_CHOOSES} <= searched


def test_search_takes_the_training_fields_fit_takes():
    fit_flags = {flag for dest, flag in _flags("fit").items() if dest.startswith("train.")}
    assert fit_flags <= set(_flags("search").values())
    args = cli.build_parser().parse_args(["search", "--weight-decay", "0.05", "--warmup-epochs", "0.5",
                                          "--cache-dir", "features", "--no-augment", "--epochs", "4"])
    train = cli.config_from(args, "train", TrainConfig)
    assert (train.weight_decay, train.warmup_epochs, train.cache_dir, train.augment) == (0.05, 0.5, "features", False)
    assert vars(args)["search.epochs"] == 4


def test_no_flags_give_the_dataclass_defaults():
    from tunewise.study import SearchConfig

    args = cli.build_parser().parse_args(["fit"])
    assert cli.config_from(args, "train", TrainConfig) == TrainConfig()
    assert cli.config_from(args, "data", DataConfig) == DataConfig()
    search = cli.config_from(cli.build_parser().parse_args(["search"]), "search", SearchConfig)
    assert dataclasses.replace(search, strategies=SearchConfig().strategies) == SearchConfig()


def test_flags_land_in_their_fields():
    args = cli.build_parser().parse_args(
        ["fit", "--seed", "3", "--split-seed", "4", "--data-root", "sets", "--strict", "--no-augment", "--lr", "0.1",
         "--optimizer", "sgd", "--patience", "0", "--max-length", "64"])
    train, data = cli._train_config(args), cli.config_from(args, "data", DataConfig)
    assert (train.seed, train.augment, train.lr, train.optimizer, train.patience) == (3, False, 0.1, "sgd", None)
    assert (data.seed, data.root, data.strict, data.max_length) == (4, "sets", True, 64)


@pytest.mark.parametrize(("argv", "words"), [
    (["fit", "--epochs", "0", "--val-fraction", "1.5"],
     ["--epochs must be a positive integer, got 0", "--val-fraction must be in [0, 1), got 1.5"]),
    (["search", "--warmup-epochs", "-1"], ["--warmup-epochs must be >= 0, got -1.0"]),
    (["evaluate", "run", "--image-size", "4"], ["--image-size must be at least 8 pixels, got 4"]),
    (["rank", "--models", "a", "--batch-size", "0"], ["--batch-size must be a positive integer, got 0"]),
    (["search", "--lr", "0.01"], ["--lr is the search's to choose", "--rates", "tunewise fit --lr"]),
])
def test_a_bad_value_is_one_line_from_validate_exit_2(capsys, argv, words):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for word in words:
        assert word in err, err


def test_a_value_of_the_wrong_type_is_argparses_error_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["fit", "--weight-decay", "lots"])
    assert exit_.value.code == 2
    assert "argument --weight-decay: must be a number, got 'lots'" in capsys.readouterr().err


def test_help_reads(capsys):
    for command in ("fit", "search", "evaluate", "rank", "demo"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = capsys.readouterr().out
        assert "--data" in text or command == "demo", command
    with pytest.raises(SystemExit):
        cli.main(["search", "--help"])
    text = capsys.readouterr().out
    assert "--weight-decay" in text and "--cache-dir" in text and "Passes over" not in text


def test_a_task_knob_is_a_flag_of_fit_and_search_and_makes_the_task(capsys):
    for command in ("fit", "search"):
        assert _flags(command)["task.detector"] == "--detector"
    args = cli.build_parser().parse_args(["fit", "--task", "object_detection", "--detector", "fcos"])
    assert cli.task_from(args).knobs() == {"detector": "fcos"}
    args = cli.build_parser().parse_args(["fit", "--task", "object_detection"])
    assert cli.task_from(args).knobs() == {"detector": "faster_rcnn"}
    assert cli.main(["fit", "--detector", "fcos", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "--detector is a knob of --task object_detection, not of image_classification" in err
