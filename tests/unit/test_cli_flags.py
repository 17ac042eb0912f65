"""No command-line flag that works today disappears or changes its default.

cli_flags.json is a snapshot of every subcommand's options, taken from the hand-written parser
before the flags were generated from the typed configs: each option string, whether it takes a
value, its default and its choices. The parser of today must accept every one of them with the
same default and at least the same choices; new options are allowed. A switch's default is
whether its effect holds without it (false for every switch: `--no-augment` is off unless given).

To drop a flag on purpose, remove it from the snapshot in the same commit, saying why;
`python tests/unit/test_cli_flags.py` rewrites the snapshot from the current parser.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SNAPSHOT = Path(__file__).with_name("cli_flags.json")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _parse(sub: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse `argv` with a placeholder for everything required; options go before positionals,
    since a positional of nargs="+" would swallow a switch after it."""
    options, positionals = [], []
    for action in sub._actions:
        if not action.option_strings:
            positionals.append("X")
        elif action.required:
            options += [action.option_strings[0], "X"]
    return sub.parse_args([*argv, *options, *positionals])


def accepted_flags(parser: argparse.ArgumentParser) -> dict[str, dict]:
    """{"fit": {"--epochs": {"takes_value": True, "default": 10, "choices": None}, ...}, ...};
    "" holds the top-level options."""
    commands = {"": parser} | _subparsers(parser)
    flags: dict[str, dict] = {}
    for command, sub in commands.items():
        absent = _parse(sub, []) if command else None
        options = {}
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            takes_value = action.nargs != 0
            for option in action.option_strings:
                if command and not takes_value:  # a switch: does its effect hold without it?
                    given = _parse(sub, [option])
                    default = getattr(absent, action.dest) == getattr(given, action.dest)
                else:
                    default = action.default
                options[option] = {"takes_value": takes_value, "default": default,
                                   "choices": list(action.choices) if action.choices else None}
        flags[command] = options
    return flags


def _current() -> dict[str, dict]:
    from tunewise.cli import build_parser

    return accepted_flags(build_parser())


def test_every_snapshotted_flag_is_still_accepted_with_its_default():
    snapshot, current = json.loads(SNAPSHOT.read_text()), _current()
    problems = []
    for command, options in snapshot.items():
        if command not in current:
            problems.append(f"subcommand {command!r} disappeared")
            continue
        for option, then in options.items():
            where = f"tunewise {command} {option}".replace("  ", " ")
            now = current[command].get(option)
            if now is None:
                problems.append(f"{where}: no longer accepted")
                continue
            if now["takes_value"] != then["takes_value"]:
                problems.append(f"{where}: takes a value {then['takes_value']} -> {now['takes_value']}")
            if now["default"] != then["default"]:
                problems.append(f"{where}: default {then['default']!r} -> {now['default']!r}")
            if then["choices"] and not set(then["choices"]) <= set(now["choices"] or ()):
                problems.append(f"{where}: choices {then['choices']} -> {now['choices']}")
    assert not problems, "\n".join(problems)


def _write_snapshot() -> None:
    """One line per option, so a change to the snapshot reads well in a diff."""
    blocks = []
    for command, flags in sorted(_current().items()):
        lines = [f"    {json.dumps(option)}: {json.dumps(facts, sort_keys=True)}"
                 for option, facts in sorted(flags.items())]
        blocks.append(f"  {json.dumps(command)}: {{\n" + ",\n".join(lines) + "\n  }")
    SNAPSHOT.write_text("{\n" + ",\n".join(blocks) + "\n}\n")
    print(f"wrote {SNAPSHOT}", file=sys.stderr)


if __name__ == "__main__":
    _write_snapshot()
