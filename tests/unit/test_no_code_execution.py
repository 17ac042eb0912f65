"""No code from data files (issue 13): src/ calls nothing that runs code a file or a string brings,
and the two readers of pickled files (tunewise.safe_load) run nothing from a crafted one.

The scan reads src/ with `ast`, not grep: `model.eval()` is a method, `eval(text)` the builtin; `torch.load(p,
weights_only=True)` is safe, `torch.load(p)` is not. Names are resolved through the file's imports
(`import numpy as np`, `from torch import load`). A finding is `file:line what`.
"""

from __future__ import annotations

import ast
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

import tunewise
from tunewise.errors import BackboneError, DataError, RunFolderError
from tunewise.safe_load import FORCE_WEIGHTS_ONLY, load_tensors, unpickle_arrays, weights_only_loads

SRC = Path(tunewise.__file__).parent

# Calls refused whatever their arguments.
NEVER = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads", "_pickle.Unpickler",
    "dill.load", "dill.loads", "cloudpickle.load", "cloudpickle.loads", "joblib.load", "shelve.open",
    "marshal.load", "marshal.loads", "pandas.read_pickle", "yaml.unsafe_load", "yaml.unsafe_load_all",
    "yaml.full_load", "yaml.full_load_all", "torch.hub.load", "torch.jit.load", "torch.package.PackageImporter",
    "os.system", "os.popen", "pty.spawn", "eval", "exec", "compile", "__import__",
}
NEVER_PREFIXES = ("subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "joblib.", "dill.", "commands.")
# torch readers that unpickle: safe with weights_only=True alone.
WEIGHTS_ONLY = {"torch.load", "torch.serialization.load", "torch.hub.load_state_dict_from_url"}
SAFE_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
# An opt-in the user gives explicitly; trust_remote_code may be bound to a name computed from it.
TRUST_OPT_IN = "TUNEWISE_TRUST_REMOTE_CODE"


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> dotted name, from every import in the file."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:  # `import a.b` binds `a`; `import a.b as c` binds `c` to a.b
                root = alias.name.split(".")[0]
                names[alias.asname or root] = alias.name if alias.asname else root
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None  # a call on a call's result, a subscript, ...: not a module function
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _opt_in_names(tree: ast.Module) -> set[str]:
    """Names assigned from an expression that reads the explicit opt-in variable."""
    return {target.id for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and TRUST_OPT_IN in ast.unparse(node.value)
            for target in node.targets if isinstance(target, ast.Name)}


def findings(source: str, filename: str) -> list[str]:
    """Each unguarded call in `source` that could run code a file or a string brings."""
    tree = ast.parse(source)
    aliases, opted_in = _aliases(tree), _opt_in_names(tree)
    modules = {name.split(".")[0] for name in aliases.values()}
    found = []

    def report(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{getattr(node, 'lineno', 0)} {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                if _dotted(base, aliases) in ("pickle.Unpickler", "_pickle.Unpickler"):
                    overrides = any(isinstance(f, ast.FunctionDef) and f.name == "find_class" for f in node.body)
                    if not overrides:
                        report(node, f"class {node.name} subclasses pickle.Unpickler without its own find_class")
            continue
        if not isinstance(node, ast.Call):
            continue
        for keyword in node.keywords:
            if keyword.arg == "shell" and not _is_const(keyword.value, False):
                report(node, "shell= other than False")
            if keyword.arg == "trust_remote_code" and not _is_const(keyword.value, False) and not (
                    isinstance(keyword.value, ast.Name) and keyword.value.id in opted_in):
                report(node, f"trust_remote_code={ast.unparse(keyword.value)} without the {TRUST_OPT_IN} opt-in")
        name = _dotted(node.func, aliases)
        if name is None:
            continue
        if isinstance(node.func, ast.Attribute) and name.split(".")[0] not in modules \
                and not name.endswith(".read_pickle"):
            continue  # a method of an object (`model.eval()`, `archive.extractall()`), not a module's function
        if name in NEVER or name.startswith(NEVER_PREFIXES) or name.endswith(".read_pickle"):
            report(node, f"{name}()")
        elif name in WEIGHTS_ONLY and not _is_const(_keyword(node, "weights_only"), True):
            report(node, f"{name}() without weights_only=True")
        elif name == "numpy.load" and not (_keyword(node, "allow_pickle") is None
                                           or _is_const(_keyword(node, "allow_pickle"), False)):
            report(node, "numpy.load(allow_pickle=...) other than False")
        elif name in ("yaml.load", "yaml.load_all"):
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or ast.unparse(loader).split(".")[-1] not in SAFE_LOADERS:
                report(node, f"{name}() without a safe Loader")
    return found


def test_src_calls_nothing_that_runs_code_from_a_file():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        found += findings(path.read_text(), str(path.relative_to(SRC.parent)))
    assert not found, "code could run from a file or a string:\n" + "\n".join(found)


def test_the_scan_finds_what_it_looks_for():
    """The scan itself: each unsafe form is found, each safe one passes (a scan that finds nothing
    would pass the test above too)."""
    unsafe = '''
import pickle, yaml, subprocess, os, joblib
import numpy as np
import pandas as pd
import torch
from torch import load
from pickle import loads as unpickle
pickle.load(f)
unpickle(b)
torch.load(p)
torch.load(p, weights_only=False)
load(p)
torch.hub.load("repo", "model")
torch.hub.load_state_dict_from_url(url)
yaml.load(text)
yaml.load(text, Loader=yaml.Loader)
yaml.unsafe_load(text)
eval(text)
exec(text)
os.system("ls")
subprocess.run(["ls"])
run(cmd, shell=True)
np.load(p, allow_pickle=True)
pd.read_pickle(p)
frame.read_pickle(p)
joblib.load(p)
AutoModel.from_pretrained(p, trust_remote_code=True)
AutoModel.from_pretrained(p, trust_remote_code=flag)
class Open(pickle.Unpickler):
    pass
'''
    found = findings(unsafe, "x.py")
    lines = sorted({int(f.split(" ", 1)[0].split(":")[1]) for f in found})
    expected = [n for n, line in enumerate(unsafe.splitlines(), 1)
                if line and not line.startswith(("import ", "from ", " "))]
    assert lines == expected, "\n".join(found)

    safe = '''
import os, pickle, yaml
import numpy as np
import torch
model.eval()
torch.load(p, map_location="cpu", weights_only=True)
torch.hub.load_state_dict_from_url(url, weights_only=True)
yaml.safe_load(text)
yaml.load(text, Loader=yaml.SafeLoader)
np.load(p)
np.load(p, allow_pickle=False)
trust = os.environ.get("TUNEWISE_TRUST_REMOTE_CODE") == "1"
AutoModel.from_pretrained(p, trust_remote_code=trust)
AutoModel.from_pretrained(p, trust_remote_code=False)
archive.extractall(folder)
class Restricted(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(name)
Restricted(f).load()
'''
    assert findings(safe, "y.py") == []


# --- the readers: honest files load, crafted ones run nothing ------------------------------------

class Payload:
    """Pickles as a call of `function(*args)`: what a crafted file does as it loads."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _payloads(marker: Path) -> dict[str, Payload]:
    import codecs
    import os

    return {
        "os.system": Payload(os.system, f"touch '{marker}'"),
        "open": Payload(open, str(marker), "w"),
        "exec": Payload(exec, f"open({str(marker)!r}, 'w').close()"),
        "codecs other than latin-1": Payload(codecs.encode, "abc", "rot13"),  # looks a codec up: can import
    }


def _batch(rng=None) -> dict:
    rng = rng or np.random.default_rng(0)
    return {"batch_label": "training batch 1 of 5", "labels": [0, 1, 2, 1],
            "data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
            "filenames": [f"img_{i}.png" for i in range(4)], "scalars": [np.int64(3), np.float32(0.5)],
            "raw": b"\x00\xffbytes"}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k] for k in a)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_an_honest_batch_loads_under_every_pickle_protocol(tmp_path, protocol):
    batch = _batch()
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    assert _same(unpickle_arrays(path, DataError, "fix"), batch)


def test_a_batch_written_by_numpy_1_loads(tmp_path):
    """numpy 1 names numpy.core.multiarray in its pickles (CIFAR's own files were written so)."""
    batch = _batch()
    written = pickle.dumps(batch, protocol=2)  # GLOBAL opcodes: text lines, no lengths to fix
    assert b"numpy._core.multiarray" in written
    path = tmp_path / "data_batch_1"
    path.write_bytes(written.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert _same(unpickle_arrays(path, DataError, "fix"), batch)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("kind", ["os.system", "open", "exec", "codecs other than latin-1"])
def test_a_crafted_batch_runs_nothing_and_is_refused_in_one_line(tmp_path, kind, protocol):
    marker = tmp_path / "MARKER"
    crafted = pickle.dumps({"data": _payloads(marker)[kind], "labels": [0]}, protocol=protocol)
    if kind != "codecs other than latin-1":  # the payload is real: plain pickle runs it
        pickle.loads(crafted)
        assert marker.exists()
        marker.unlink()
    path = tmp_path / "data_batch_1"
    path.write_bytes(crafted)
    with pytest.raises(DataError) as caught:
        unpickle_arrays(path, DataError, "Use the official files.")
    assert not marker.exists()
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and message.endswith("Use the official files.")
    assert "refused" in message and "could run code" in message


@pytest.mark.parametrize("content", [b"", b"\x80\x02}q\x00(X\x04\x00\x00\x00dat", b"not a pickle at all"])
def test_a_truncated_or_foreign_batch_is_one_line(tmp_path, content):
    path = tmp_path / "test_batch"
    path.write_bytes(content)
    with pytest.raises(DataError, match="cannot read .*test_batch.*not a readable pickle") as caught:
        unpickle_arrays(path, DataError, "fix")
    assert "\n" not in str(caught.value)


def _crafted_checkpoint(path: Path, payload: Payload) -> Path:
    import torch

    torch.save({"weight": torch.zeros(2), "extra": payload}, path)
    return path


@pytest.mark.parametrize("kind", ["os.system", "open", "exec"])
def test_a_crafted_checkpoint_runs_nothing_and_is_refused_in_one_line(tmp_path, kind):
    import torch

    marker = tmp_path / "MARKER"
    path = _crafted_checkpoint(tmp_path / "best.pt", _payloads(marker)[kind])
    torch.load(path, weights_only=False)  # the payload is real
    assert marker.exists()
    marker.unlink()
    with pytest.raises(RunFolderError) as caught:
        load_tensors(path, RunFolderError, "Delete it.")
    message = str(caught.value)
    assert not marker.exists()
    assert "\n" not in message and str(path) in message and "refused" in message and message.endswith("Delete it.")
    assert "weights_only=False" not in message  # torch's own advice is to turn the protection off
    assert len(message) < 300, message


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04truncated zip", b"junk bytes, not torch.save's"])
def test_a_damaged_checkpoint_is_one_line(tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(RunFolderError, match="checkpoint.pt") as caught:
        load_tensors(path, RunFolderError, "fix")
    assert "\n" not in str(caught.value)


def test_a_plain_pickle_of_tensors_is_refused_in_one_line(tmp_path):
    """pickle.dump (not torch.save) of a dict: torch's weights-only reader has no FRAME opcode."""
    import torch

    path = tmp_path / "weights.pth"
    path.write_bytes(pickle.dumps({"w": torch.zeros(2)}, protocol=4))
    with pytest.raises(BackboneError) as caught:
        load_tensors(path, BackboneError, "fix")
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_weights_only_loads_covers_libraries_that_pass_weights_only_false(tmp_path, monkeypatch):
    """torch.hub.load_state_dict_from_url (torchvision's presets) loads its cache with weights_only=False."""
    import torch

    monkeypatch.delenv(FORCE_WEIGHTS_ONLY, raising=False)
    marker = tmp_path / "MARKER"
    path = _crafted_checkpoint(tmp_path / "resnet50-11ad3fa6.pth", _payloads(marker)["open"])
    with weights_only_loads(), pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=False)
    assert not marker.exists()
    assert FORCE_WEIGHTS_ONLY not in os.environ  # as it was

    monkeypatch.setenv(FORCE_WEIGHTS_ONLY, "0")
    with weights_only_loads():
        assert os.environ[FORCE_WEIGHTS_ONLY] == "1"
    assert os.environ[FORCE_WEIGHTS_ONLY] == "0"


def test_remote_code_runs_only_when_the_user_opts_in(tmp_path, monkeypatch):
    """An hf: folder whose config.json maps to its own Python file: refused, the file never imported."""
    import json

    from tunewise.backbones import load_backbone

    monkeypatch.delenv("TUNEWISE_TRUST_REMOTE_CODE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    marker = tmp_path / "MARKER"
    folder = tmp_path / "custom_model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "custom_bert", "auto_map": {"AutoConfig": "custom.Config", "AutoModel": "custom.Model"}}))
    (folder / "custom.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(BackboneError, match="TUNEWISE_TRUST_REMOTE_CODE=1") as caught:
        load_backbone(f"hf:{folder}")
    assert "\n" not in str(caught.value)
    assert not marker.exists()
