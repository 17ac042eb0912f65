"""The house's layering, read from the source: names written once, arrows pointing down, no circles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import tunewise
from tunewise.strategies import STRATEGIES
from tunewise.tasks import TASKS, all_tasks

SRC = Path(tunewise.__file__).parent
ALLOWED = {"config.py": "the defaults (DEFAULT_TASK, DEFAULT_STRATEGY, ...), written once",
           "demo.py": "the demos choose their tasks and strategies by name"}
HEAVY = ("torch", "torchvision", "timm", "transformers", "peft", "accelerate")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, module_level: bool) -> set[str]:
    """Modules imported by `path`: everywhere, or only by statements that run on import (not inside
    functions, classes or `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree) if not module_level else _module_level(tree.body)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _module_level(body: list[ast.stmt]):
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        yield node
        for child in ("body", "orelse", "handlers", "finalbody"):
            yield from _module_level(getattr(node, child, []))


def test_a_registered_name_is_written_only_in_its_own_module():
    all_tasks()  # every task module registers itself
    own = {cls.name: Path(sys.modules[cls.__module__].__file__) for registry in (TASKS, STRATEGIES)
           for cls in map(registry.get, registry.names())}
    assert len(own) >= 17, own  # 6 tasks, 11 strategies: the registries were filled
    leaks = []
    for module, path in _modules().items():
        if path.name in ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in own \
                    and own[node.value] != path:
                leaks.append(f"{module}:{node.lineno} writes {node.value!r}")
    assert not leaks, "\n".join(leaks)


def test_ranking_does_not_import_training():
    for module, path in _modules().items():
        if module.startswith("tunewise.ranking"):
            assert "tunewise.train" not in _imports(path, module_level=False), module


def test_no_module_imports_another_modules_private_names():
    modules = _modules()
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tunewise"):
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
                assert not private, f"{module} imports {private} from {node.module}"


def test_no_import_circles():
    modules = _modules()
    graph = {m: {i for i in _imports(p, module_level=True) if i in modules and i != m} for m, p in modules.items()}
    done, path = set(), []

    def visit(module: str) -> None:
        if module in path:
            pytest.fail("import circle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        path.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_reports_import_no_torch():
    code = ("import sys; import tunewise.report, tunewise.report.search_report, tunewise.report.ranking_report, "
            "tunewise.report.render, tunewise.records; "
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules]; print(heavy); sys.exit(bool(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_task_states_its_facts():
    for task in all_tasks():
        assert task.modality in ("image", "text") and task.data_kind is not None and task.reads, task.name
        assert task.metric in task.metrics_names, task.name
        assert (task.transformers_head is not None) == (task.modality == "text"), task.name
