"""The layout's rules, checked on the source: data flows one way (the core imports no connector or
pipeline; connectors import no pipeline), no import cycle anywhere (top-level or inside a
function), and the public names import from the package roots."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rag", "connectors", "pipelines")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = f
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that `path` imports anywhere in its body (TYPE_CHECKING blocks excluded:
    they never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import mod` names the module pkg.mod; `from mod import name`, mod itself
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                     for a in node.names]
        else:
            continue
        found.update(n for n in names if n in modules)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(p, modules) - {m} for m, p in modules.items()}


def test_the_core_imports_no_connector_or_pipeline_and_connectors_no_pipeline():
    bad = [(m, d) for m, deps in _graph().items() for d in deps
           if (m.startswith("rag") and d.split(".")[0] in ("connectors", "pipelines"))
           or (m.startswith("connectors") and d.startswith("pipelines"))]
    assert bad == []


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


def test_a_module_per_folder_stays_small():
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in _modules().items()}
    assert max(sizes.values()) < 600, max(sizes.items(), key=lambda kv: kv[1])


@pytest.mark.parametrize("package", ["rag", "pipelines", "connectors"])
def test_public_names_import_from_the_package_roots(package):
    mod = importlib.import_module(package)
    assert mod.__all__, package
    for module in set(mod._EXPORTS.values()):  # a loaded submodule must not shadow a name
        importlib.import_module(module)
    for name in mod.__all__:
        obj = getattr(mod, name)
        assert obj is not None and getattr(obj, "__name__", name) == name, (package, name)
    with pytest.raises(AttributeError):
        getattr(mod, "no_such_name")
