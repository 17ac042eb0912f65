"""Reading pickled files a user handed us, without running code from them.

A pickle names functions to call while it loads (`__reduce__`); `pickle.load` calls whatever it
names, so a crafted CIFAR batch or checkpoint runs code on the reader's machine. Every pickled
file tunewise reads goes through one of the two readers here, and each refuses any global outside
a short allowlist, naming the file and the refused global in one line:

- `unpickle_arrays`: CIFAR's python batches (dicts of lists, strings and numpy arrays);
- `load_tensors`: `torch.load(weights_only=True)` for checkpoints and `.pth` weights, with torch's
  long advice (which suggests `weights_only=False`) replaced by one line.

`weights_only_loads` covers the loads that happen inside timm and torchvision (transformers reads
`.bin` weights with weights_only=True by itself). tests/unit/test_no_code_execution.py scans src/
for any other way in (pickle, torch.load without weights_only, yaml.load, eval, subprocess, ...).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from tunewise.errors import TunewiseError

try:  # numpy 2 writes numpy._core in its pickles, numpy 1 numpy.core: both mean these functions
    from numpy._core.multiarray import _reconstruct, scalar
    from numpy._core.numeric import _frombuffer  # type: ignore[attr-defined]  # private: not in the stubs
except ImportError:  # pragma: no cover - numpy < 1.26
    from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
    from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]

# What a pickled numpy array (or numpy scalar) is rebuilt from, under pickle protocols 0-5 (5 writes
# arrays as _frombuffer, which refuses object arrays); nothing here can run other code. Protocols
# 0-2 also write bytes as `_codecs.encode(text, "latin1")`: allowed for latin-1 alone.
NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    **{(module, "_reconstruct"): _reconstruct for module in ("numpy._core.multiarray", "numpy.core.multiarray")},
    **{(module, "scalar"): scalar for module in ("numpy._core.multiarray", "numpy.core.multiarray")},
    **{(module, "_frombuffer"): _frombuffer for module in ("numpy._core.numeric", "numpy.core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds plain containers, strings, numbers and numpy arrays, and nothing else."""

    def __init__(self, file: IO[bytes], path: Path, error: type[TunewiseError], fix: str) -> None:
        super().__init__(file, encoding="latin1")  # Python 2 pickles (CIFAR's) hold latin-1 str
        self.path, self.error, self.fix = path, error, fix

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return self._latin1
        found = NUMPY_GLOBALS.get((module, name))
        if found is None:
            raise self.error(refused(self.path, f"{module}.{name}", self.fix))
        return found

    def _latin1(self, text: str, encoding: str = "latin1") -> bytes:
        """Another codec is refused: looking one up can import a module."""
        if not isinstance(text, str) or not isinstance(encoding, str) \
                or encoding.replace("-", "").lower() != "latin1":
            raise self.error(refused(self.path, f"_codecs.encode(..., {encoding!r})", self.fix))
        return text.encode("latin1")


def unpickle_arrays(path: str | Path, error: type[TunewiseError], fix: str) -> Any:
    """The object pickled in `path`, if it is made of dicts, lists, tuples, strings, numbers and
    numpy arrays alone.

    Raises:
        `error`: the pickle names any other global (it could run code; nothing was called), or the
            file is not a readable pickle. The message names the file and ends with `fix`.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            return _ArrayUnpickler(f, path, error, fix).load()
    except (TunewiseError, OSError):  # refused above, or a file that cannot be opened: said as it is
        raise
    except Exception as err:  # a truncated or foreign file: EOFError, UnpicklingError, ValueError, ...
        raise error(f"cannot read {str(path)!r}: it is not a readable pickle ({type(err).__name__}: "
                    f"{_first_line(err)}). {fix}") from None


def refused(path: str | Path, what: str, fix: str) -> str:
    """The one line that says a file was refused because loading it would call `what`."""
    return (f"refused to read {_named(path)}: loading it would call {what}, which could run code, and "
            f"nothing in it was run. {fix}").rstrip()


def _named(path: str | Path) -> str:
    """A path quoted; a description (`the cached weights of timm:x`) as it is."""
    return repr(str(path)) if isinstance(path, Path) else path


# torch words a refused global in several ways ("Unsupported global: GLOBAL io.open was not an
# allowed global", "Trying to load unsupported GLOBAL posix.system whose module posix is blocked").
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_REASON = re.compile(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", re.S)
_ADVICE = ("Weights only load failed", "Check the documentation", "Please file an issue")


def load_tensors(path: str | Path, error: type[TunewiseError], fix: str) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU: tensors, plain containers and numbers only.

    Raises:
        `error`: one line naming the file: the global torch refused (nothing was called), or why the
            file is not one torch.save wrote. It ends with `fix`.
    """
    import torch

    path = Path(path)
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": a plain pickle, refused below anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        if not path.is_file():
            raise error(f"{str(path)!r} does not exist. {fix}") from None
        raise
    except pickle.UnpicklingError as err:
        raise error(f"{weights_refusal(path, err)} {fix}") from None
    except Exception as err:  # truncated zip (RuntimeError), junk bytes (KeyError, EOFError), ...
        raise error(f"cannot read {str(path)!r}: it is not a file torch.save wrote, or it is truncated "
                    f"({type(err).__name__}: {_first_line(err)}). {fix}") from None


def weights_refusal(path: str | Path, err: pickle.UnpicklingError) -> str:
    """torch's weights_only refusal of `path` (a Path, or a description) in one line: its own text is
    a dozen lines of advice, one of which is to load with weights_only=False."""
    text = str(err)
    named = _GLOBAL.search(text)
    if named:
        return refused(path, named.group(1), "")
    reason = _REASON.search(text)
    own = [p for p in text.split("\n\n") if p.strip() and not p.strip().startswith(_ADVICE)]
    shown = " ".join((reason.group(1) if reason else own[0] if own else "not a weights-only file").split())
    shown = shown if len(shown) <= 160 else shown[:157] + "..."
    return (f"refused to read {_named(path)}: it holds more than tensors, numbers and plain containers ({shown}), "
            f"and nothing in it was run.")


FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
OPT_OUT = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Every torch.load inside reads weights only, whatever its caller passes.

    torchvision's weight presets load through torch.hub.load_state_dict_from_url, whose default is
    weights_only=False, and the file they load is whatever sits in the hub cache under that name (the
    hash in the name is checked on download only): a file copied there would run code. torch reads
    TORCH_FORCE_WEIGHTS_ONLY_LOAD at each load, so this sets it for the duration. A user who set
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD has opted out, and is left so (torch refuses both at once).
    """
    if os.environ.get(OPT_OUT, "0").lower() in ("1", "y", "yes", "true"):
        yield
        return
    before = os.environ.get(FORCE_WEIGHTS_ONLY)
    os.environ[FORCE_WEIGHTS_ONLY] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(FORCE_WEIGHTS_ONLY, None)
        else:
            os.environ[FORCE_WEIGHTS_ONLY] = before


def _first_line(err: BaseException) -> str:
    """The error's first sentence: torch appends paragraphs of advice to its own."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return "the file ends early" if isinstance(err, EOFError) else "no message"
    return re.split(r"(?<=[.:]) (?=[A-Z])", lines[0])[0].rstrip(".:")
