"""The package's import structure: no cycle between modules, and the shared core names no
family (a family plugs in through ``streams/families.py`` alone). Imports inside functions
count too: a cycle dodged that way is still a cycle."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
FAMILIES = ("streams.engagement", "streams.replies", "streams.conversion", "streams.families")
CORE = ("streams.windows", "streams.keyed", "streams.ingest", "streams.exporter", "streams.settings",
        "streams.family", "streams.routing", "streams.changelog", "streams.transport", "streams.health")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports() -> dict[str, set[str]]:
    """Module -> the streams/schemas modules it imports (anywhere in its body)."""
    mods = {module_name(p): p for d in ("streams", "schemas") for p in (ROOT / d).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
        graph[name] = {m for m in found if m in mods and m != name}
    return graph


def test_no_module_imports_its_way_back_to_itself():
    graph = imports()
    # a package's __init__ re-exporting its modules is not a cycle of its own
    edges = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(edges[m]):
            if state.get(d) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_the_shared_core_names_no_family():
    graph = imports()
    for core in CORE:
        named = sorted(d for d in graph[core] if d.startswith(FAMILIES))
        assert not named, f"{core} imports {named}: family knowledge belongs in the family's folder"
