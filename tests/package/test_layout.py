"""The package's layering, read from its source: no import cycles, subpackages in one order."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import vedforge

PACKAGE = Path(vedforge.__file__).parent

# Top layer first; a subpackage may import only those after it.
LAYERS = ["cli", "sweeps", "pipeline", "architectures", "sources", "recipe", "compat", "families", "weights", "core"]


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Every import between the package's modules, deferred ones included."""
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target.startswith("vedforge") and target != name:
                    edges[name].add(target)
    return edges


def _subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and module in _packages()) else None


def _packages() -> set[str]:
    return {".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")}


def test_no_module_imports_one_that_imports_it_back():
    mods = _modules()
    edges = _imports(mods)

    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), [start]
        while stack:
            node = stack.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                stack.extend(edges.get(node, ()))
        return False

    cycles = sorted(f"{a} -> {b}" for a in edges for b in edges[a] if reaches(b, a))
    assert cycles == []


def test_subpackages_import_only_the_layers_below_them():
    edges = _imports(_modules())
    upward = sorted(
        f"{a} -> {b}" for a in edges for b in edges[a]
        if _subpackage(a) and _subpackage(b) and _subpackage(a) != _subpackage(b)
        and LAYERS.index(_subpackage(b)) < LAYERS.index(_subpackage(a)))
    assert upward == []
    # The modules directly in vedforge/ are public faces: no subpackage imports them.
    into_top = sorted(f"{a} -> {b}" for a in edges for b in edges[a] if _subpackage(a) and not _subpackage(b) and b != "vedforge")
    assert into_top == []


def test_every_subpackage_has_a_layer_and_few_modules_sit_at_the_top():
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert subpackages == set(LAYERS)
    assert len([p for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]) <= 10


def test_the_pipeline_knows_no_architecture_by_name():
    """What differs between architectures comes from the Architecture interface, not from branches."""
    for name in ("plan", "runner", "plan_report", "manifest", "artifacts"):
        path = PACKAGE / "pipeline" / f"{name}.py"
        text = path.read_text()
        assert "prefix" not in text.replace("prefix=", ""), path.name
        assert "architectures.prefix" not in text and "architectures.cross_attention" not in text, path.name
