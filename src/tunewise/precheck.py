"""Checks that need no heavy import: the names each registry holds, read from the source with `ast`
(importing torch takes seconds), so the CLI can refuse a misspelt data set or model source at once.

Each registry entry is written in its own module as `@REGISTRY.register("name")` or as a class
decorated `@REGISTRY.add` with `name: ClassVar[str] = "name"`; that is what is read here.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path

from tunewise.config import DataConfig
from tunewise.registry import did_you_mean


def source_of(module: str) -> Path:
    """The file of a tunewise module or package, found without importing it or its parents
    (`find_spec` of a submodule runs the parent package's __init__)."""
    parts = module.split(".")
    root = Path(importlib.util.find_spec(parts[0]).origin).parent  # type: ignore[union-attr, arg-type]
    path = root.joinpath(*parts[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


@cache
def registered(package: str, registry: str) -> tuple[str, ...]:
    """The names that the modules of `package` register in `registry` (a module-level name)."""
    names: set[str] = set()
    for path in sorted(source_of(package).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                names |= _decorated(node, registry, path.stem)
    return tuple(sorted(names))


def _decorated(node: ast.FunctionDef | ast.ClassDef, registry: str, module: str) -> set[str]:
    """`@REGISTRY.register("name")`: the name; `@REGISTRY.add` on a class: its `name` attribute when
    written as a string there, else its module's name (a task or strategy module is named after it)."""
    found = set()
    for decorator in node.decorator_list:
        call = decorator.func if isinstance(decorator, ast.Call) else decorator
        if not (isinstance(call, ast.Attribute) and isinstance(call.value, ast.Name) and call.value.id == registry):
            continue
        if call.attr == "register" and isinstance(decorator, ast.Call) and decorator.args \
                and isinstance(decorator.args[0], ast.Constant):
            found.add(str(decorator.args[0].value))
        elif call.attr == "add" and isinstance(node, ast.ClassDef):
            written = [item.value for item in node.body
                       if isinstance(item, ast.AnnAssign | ast.Assign) and _target(item) == "name"]
            found |= {str(v.value) if isinstance(v, ast.Constant) else module for v in written} or {module}
    return found


@cache
def task_knobs() -> dict[str, str]:
    """{task name: its module} for each task module with a top-level `Knobs` class (Task.knob_type):
    the command line makes flags of its fields."""
    found: dict[str, str] = {}
    for path in sorted(source_of("tunewise.tasks").parent.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(node, ast.ClassDef) and node.name == "Knobs" for node in tree.body):
            for node in tree.body:
                if isinstance(node, ast.ClassDef):
                    found |= dict.fromkeys(_decorated(node, "TASKS", path.stem), f"tunewise.tasks.{path.stem}")
    return found


def _target(item: ast.AnnAssign | ast.Assign) -> str | None:
    target = item.target if isinstance(item, ast.AnnAssign) else item.targets[0]
    return target.id if isinstance(target, ast.Name) else None


def data_problems(config: DataConfig) -> list[str]:
    """`--data` names neither an existing path nor a registered data set."""
    known = registered("tunewise.data", "DATASETS")
    if Path(config.data).exists() or config.data in known:
        return []
    return [f"data {config.data!r} is neither an existing folder nor a known data set."
            f"{did_you_mean(config.data, list(known))} Pass the path of your data (a folder or file) or one of: "
            f"{', '.join(known)}"]


def model_problems(model: str) -> list[str]:
    """`--model` has a source prefix that no backbone source registers (and is not a path)."""
    source, sep, name = model.partition(":")
    known = registered("tunewise.backbones", "SOURCES")
    if not sep or not name or source in known or Path(model).exists():
        return []  # a path, or no prefix: load_backbone says what it needs
    return [f"model {model!r} has an unknown source {source!r}.{did_you_mean(source, list(known))} "
            f"Use one of {', '.join(f'{s}:NAME' for s in known)}, or the path of a weights file"]
