"""The package's floor plan: imports run one way between subpackages, with no circles.

Walks the AST of every module (imports inside functions included) and checks the rules of the
layout (README, "Layout"; ``DESIGN.md``):

- ``_utils`` and ``exceptions`` import nothing of brainage; ``data`` only those two;
  ``imaging`` also ``data``; ``models`` and ``analysis`` only ``_utils``/``exceptions``;
  ``inference`` (what a user runs on a trained model folder) ``data``, ``imaging``,
  ``models``, ``analysis``, never ``study``; ``study`` and ``cli`` anything.
- A module whose name starts with ``_`` is imported only inside its own subpackage, and no
  ``_private`` name is imported from another module.
- No import circles between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "brainage"
BASE = {"_utils", "exceptions"}
ALLOWED = {
    "_utils": {"_utils"},
    "exceptions": set(),
    "data": BASE | {"data"},
    "imaging": BASE | {"imaging", "data"},
    "models": BASE | {"models"},
    "analysis": BASE | {"analysis"},
    "inference": BASE | {"inference", "data", "imaging", "models", "analysis"},
    "study": None,  # anything
    "cli": None,
    "__init__": {"_utils"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str | None = None) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) of every brainage import in a file."""
    name = name or _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0]
                      == "brainage"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module.split(".")[0] == "brainage":
                found.append((node.lineno, module, [a.name for a in node.names]))
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _targets(module: str, names: list[str]) -> list[str]:
    """The brainage modules an import statement loads (``from pkg import mod`` included)."""
    out = [module]
    out += [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
    return out


def test_the_package_has_the_documented_subpackages():
    layers = {_layer(m) for m in MODULES}
    assert layers == set(ALLOWED)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_layer_rules(module):
    layer = _layer(module)
    allowed = ALLOWED[layer]
    problems = []
    for line, target, names in _imports(MODULES[module]):
        for imported in _targets(target, names):
            other = _layer(imported)
            if other == "__init__" and names == ["__version__"]:
                other = "_utils"
            if allowed is not None and other not in allowed and other != "__init__":
                problems.append(f"line {line}: {layer} may not import {imported}")
            if other == "__init__" and layer != "__init__":
                problems.append(f"line {line}: import from the top-level package ({names})")
            private = [p for p in imported.split(".")[2:] if p.startswith("_")]
            if private and imported.split(".")[:2] != module.split(".")[:2]:
                problems.append(f"line {line}: private module {imported} used outside "
                                f"brainage.{other}")
        hidden = [n for n in names if n.startswith("_") and n != "__version__"
                  and f"{target}.{n}" not in MODULES]
        if hidden and target != module:
            problems.append(f"line {line}: private name(s) {hidden} imported from {target}")
    assert not problems, f"{module}:\n" + "\n".join(problems)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        edges = set()
        for _, target, names in _imports(path):
            for imported in _targets(target, names):
                if imported in MODULES and imported != module and not path.name == "__init__.py":
                    edges.add(imported)
        graph[module] = {e for e in edges if not MODULES[e].name == "__init__.py"}
    return graph


def test_no_import_circles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_the_checker_sees_a_broken_rule(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from brainage.study import runs\nfrom brainage.data.cohort import _Log\n")
    found = _imports(bad, "brainage.models.bad")
    assert [t for _, t, _ in found] == ["brainage.study", "brainage.data.cohort"]
    assert found[1][2] == ["_Log"]
