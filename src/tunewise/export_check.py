"""Opening an exported model's folder: model.json is checked against what `export` writes, and
the weights' names and shapes against the model it describes, before any weights are loaded.

A folder edited by hand or damaged on disk otherwise fails deep inside torch or transformers
(`KeyError: 'classes'`, `size mismatch`, `SafetensorError`) with a message that names neither the
file nor the fix, or, worse, loads: transformers fills a missing head with random weights. Here it
is one RunFolderError that names the file and its first problem.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from tunewise.backbones import Preprocess
from tunewise.errors import RunFolderError, TunewiseError, one_line
from tunewise.tasks import Task, all_tasks, get_task

FIX = "The run folder was edited or damaged: refit it, or restore it from a copy."

COMMON: dict[str, Any] = {"source": str, "task": str, "classes": list[str]}
LAYOUTS: dict[str | None, dict[str, Any]] = {  # the other keys, by `format`: what export writes per kind of task
    None: {"arch": str, "head_key": str, "preprocess": dict},  # image classification: timm/torchvision names
    "tunewise": {"arch": str, "preprocess": dict},  # detection, segmentation: the whole model
    "transformers": {"max_length": int, "doc_stride": int},  # text: a transformers checkpoint beside it
}
OPTIONAL: dict[str, Any] = {"pretrained": bool, "unanswerable": bool, "chat": bool}
"""Checked where present: dense exports older than this key load as pretrained (BatchNorm frozen);
QA exports older than `unanswerable` may answer "" (no answer), as they did; a generator's `chat`
says whether predict wraps a prompt as a user message."""


def read_model_json(folder: Path) -> dict[str, Any]:
    """model.json of an export, checked: its keys and their types, its task, its preprocessing.

    Raises:
        RunFolderError: not JSON, or the first thing in it that export would not have written.
    """
    path = folder / "model.json"
    try:
        info = json.loads(path.read_bytes())
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise RunFolderError(f"{path} is not valid JSON ({one_line(err)}). {FIX}") from None
    problem = _problem(info)
    if problem:
        raise RunFolderError(f"{path}: {problem.rstrip('.')}. {FIX}")
    return info


def _problem(info: object) -> str | None:
    """The first way `info` differs from what export writes, or None."""
    if not isinstance(info, dict):
        return f"holds {_kind(info)}, not a JSON object"
    layout = info.get("format")
    if layout not in LAYOUTS:
        return f"'format' is {layout!r}; tunewise writes {' or '.join(repr(f) for f in LAYOUTS if f)}, or none"
    schema = COMMON | LAYOUTS[layout]
    if info.get("classes") == [] and _unlabelled(info.get("task")):  # a generator predicts no classes
        schema = {k: v for k, v in schema.items() if k != "classes"}
    problem = _keys_problem(info, schema, "")
    if problem:
        return problem
    try:
        task = get_task(info["task"])
    except TunewiseError as err:
        return one_line(err)
    if _layout(task) != layout:
        fitting = [t.name for t in all_tasks() if _layout(t) == layout]
        return f"'task' is {task.name!r}, but the files are laid out for {' or '.join(fitting)}"
    knobs = get_type_hints(task.knob_type) if task.knob_type else {}  # older exports lack some: defaults apply
    present = OPTIONAL | knobs
    problem = _keys_problem(info, {name: hint for name, hint in present.items() if name in info}, "")
    if problem or "preprocess" not in info:
        return problem
    settings = info["preprocess"]
    allowed = get_type_hints(Preprocess)
    unknown = [name for name in settings if name not in allowed]
    if unknown:
        return f"'preprocess' has an unknown field {unknown[0]!r} (its fields: {', '.join(allowed)})"
    return _keys_problem(settings, allowed, "'preprocess' field ")


def _unlabelled(name: object) -> bool:
    try:
        return isinstance(name, str) and not get_task(name).labelled
    except TunewiseError:
        return False


def _layout(task: Task) -> str | None:
    """The `format` that export writes for `task`."""
    return "transformers" if task.modality == "text" else "tunewise" if task.dense else None


def _keys_problem(values: dict[str, Any], schema: dict[str, Any], where: str) -> str | None:
    for name, hint in schema.items():
        if name not in values:
            return f"{where}has no {name!r}"
        if not _fits(values[name], hint):
            return f"{where}{name!r} is {_kind(values[name])}, expected {_describe(hint)}"
    return None


def _fits(value: object, hint: Any) -> bool:
    """Whether a JSON value fits a field typed `hint` (str, int, float, bool, dict, list[str], a
    Literal, a fixed-length tuple, which JSON writes as a list)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return value in args
    if origin in (list, tuple):
        return (isinstance(value, list) and bool(value) and (origin is list or len(value) == len(args))
                and all(_fits(v, args[0]) for v in value))
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return type(value) is hint  # an int is no bool, a bool no int


def _describe(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (list, tuple):
        each = _describe(args[0]).split(" ", 1)[1]  # "a number" -> "number"
        return f"a list of {len(args) if origin is tuple else 'one or more'} {each}s"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "an object"}[hint]


def _kind(value: object) -> str:
    """What a JSON value is, in JSON's words."""
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "true or false", int: "an integer",
            float: "a number"}.get(type(value), type(value).__name__)


def check_weights(file: Path, expected: dict[str, torch.Tensor], described: str) -> None:
    """Raise unless `file` holds exactly the tensors `expected` names, each of its shape, read from
    the file's header alone. `expected` is a state dict with keep_vars: a tensor tied under two
    names (one Parameter) is saved under one of them.

    Raises:
        RunFolderError: the first unexpected, mis-shaped or missing tensor; or an unreadable file.
    """
    shapes = _shapes(file)
    for name, shape in shapes.items():
        if name not in expected:
            raise _edited(file, f"holds a tensor {name!r} that {described} does not have")
        if list(expected[name].shape) != shape:
            raise _edited(file, f"tensor {name!r} has shape {shape}, but {described} needs "
                                 f"{list(expected[name].shape)}")
    present = {id(expected[name]) for name in shapes}
    missing = [name for name, tensor in expected.items() if id(tensor) not in present]
    if missing:
        raise _edited(file, f"lacks the tensor {missing[0]!r} that {described} needs")


def _edited(file: Path, problem: str) -> RunFolderError:
    return RunFolderError(f"{file}: {problem}. {FIX}")


def _shapes(file: Path) -> dict[str, list[int]]:
    try:
        with safe_open(str(file), framework="pt") as f:
            return {name: list(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118 (no __iter__)
    except (SafetensorError, OSError) as err:
        raise unreadable(file, err) from None


def load_weights(file: Path) -> dict[str, torch.Tensor]:
    """The tensors of `file`, checked by `check_weights` before."""
    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise unreadable(file, err) from None


def unreadable(file: Path, err: BaseException) -> RunFolderError:
    return RunFolderError(f"cannot read {file} ({one_line(err)}): it is damaged or cut short. Restore it from a "
                          "copy, or refit.")


def check_transformers(folder: Path, task: Task) -> None:
    """An exported text model's config.json and weights against each other, before transformers
    loads them (it would fill a missing or mis-shaped head with random weights, or fail with its
    own traceback). The model is built on the meta device: no memory, no weights."""
    import transformers

    assert task.transformers_head is not None, "a text task without a transformers head exports nothing"
    auto_name = task.transformers_head[0]
    with transformers_files(folder), torch.device("meta"):
        config = transformers.AutoConfig.from_pretrained(folder)
        model = getattr(transformers, auto_name).from_config(config)
    check_weights(folder / "model.safetensors", model.state_dict(keep_vars=True),
                  f"a {config.model_type} {task.name} model ({auto_name})")


@contextlib.contextmanager
def transformers_files(folder: Path) -> Iterator[None]:
    """transformers reading an export's own files (config.json, the tokenizer's): one it cannot
    parse is the folder's damage, named, not an internal error of tunewise."""
    try:
        yield
    except TunewiseError:
        raise
    except (OSError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise RunFolderError(f"cannot load the transformers model in {folder} ({type(err).__name__}: "
                             f"{one_line(err)}). {FIX}") from None
