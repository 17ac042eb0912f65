"""The harness of the bad-input matrix (issue 13): run a command in-process through
`tunewise.cli.main` and check what a user would see.

Each case asserts the exit code, that stderr's error is one line naming the input, that no
traceback was printed, and that files which were in the target folder before are byte-identical
after. In-process keeps a case to the cost of the work it does (no torch import per case); the
few cases about signals and kills run a subprocess of their own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def error(self) -> str:
        """The `error: ...` line, without its prefix."""
        lines = [line for line in self.err.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1, f"expected one error line, got:\n{self.err}"
        return lines[0].removeprefix("error: ")


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> Outcome:
    """`tunewise ARGV...` in this process; its exit code and output."""
    from tunewise.cli import main

    capsys.readouterr()  # drop what earlier steps printed
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


def snapshot(*folders: Path) -> dict[Path, str]:
    """Each file under `folders` and its digest: `assert snapshot(f) == before` proves nothing was changed."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders if folder.exists() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_user_error(outcome: Outcome, words: Iterable[str], code: int = 2) -> None:
    """Exit `code`, no traceback, and one error line that contains each of `words` (any case)."""
    assert "Traceback" not in outcome.err + outcome.out, outcome.err
    assert outcome.code == code, f"exit {outcome.code}, expected {code}:\n{outcome.err}"
    missing = [w for w in words if w.lower() not in outcome.error.lower()]
    assert not missing, f"{missing} not in: {outcome.error}"
