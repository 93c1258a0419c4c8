"""The layout holds: no import cycle, no private name used across packages, stages keep to their lanes.

Read from the source (ast), so it checks every import, function-local ones included. The rules are the ones each
package's docstring states (`migrator/<lane>/__init__.py`) and ARCHITECTURE.md draws.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "migrator"


def _name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(PKG.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}


def _package(module: str) -> str:
    """The package a module belongs to (a package's __init__ belongs to the package itself)."""
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, name taken from it or None, line) for every import of a migrator module."""
    out = []
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name in MODULES]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("migrator"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.append((sub, None, node.lineno) if sub in MODULES else (node.module, a.name, node.lineno))
    return out


GRAPH = {m: sorted({t for t, _, _ in _imports(m) if t != m and t in MODULES}) for m in MODULES}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    assert _cycles() == []


def _private_uses(module: str) -> list[str]:
    """`from other.pkg import _x`, and `alias._x` on a module imported from another package."""
    found, aliases = [], {}
    here = _package(module)
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("migrator"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if sub in MODULES:
                    aliases[a.asname or a.name] = sub
                elif a.name.startswith("_") and _package(node.module) != here:
                    found.append(f"{module}:{node.lineno} imports {node.module}.{a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in MODULES and a.asname:
                    aliases[a.asname] = a.name
    for node in ast.walk(TREES[module]):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")
                and _package(aliases[node.value.id]) != here):
            found.append(f"{module}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    return found


def test_no_private_name_used_across_packages():
    assert [u for m in MODULES for u in _private_uses(m)] == []


# (importer prefix, imported prefix, why): a module under the first never imports one under the second
FORBIDDEN = [
    ("migrator.convert", "migrator.snapshot", "conversion is pure: no stage"),
    ("migrator.convert", "migrator.plan.build", "conversion is pure: no stage"),
    ("migrator.convert", "migrator.plan.checks", "conversion is pure: no stage"),
    ("migrator.convert", "migrator.load", "conversion is pure: no stage"),
    ("migrator.convert", "migrator.verify", "conversion is pure: no stage"),
    ("migrator.convert", "migrator.vectors", "conversion is pure: no stage"),
    ("migrator.convert", "migrator.ledger", "conversion is pure: no ledger"),
    ("migrator.convert", "migrator.targets", "conversion is pure: no target"),
    ("migrator.verify", "migrator.load", "verify measures what load wrote, without load's internals"),
    ("migrator.catchup", "migrator.verify", "a catch-up is proven by verify, it does not verify itself"),
    ("migrator.load", "migrator.catchup", "the load knows nothing of catch-ups"),
    ("migrator.verify", "migrator.catchup", "verify compares a target with a snapshot, however it was written"),
    ("migrator.load", "migrator.verify", "the load never verifies itself"),
    ("migrator.files", "migrator.load", "moving uploads is its own stage, after the rows are in"),
    ("migrator.files", "migrator.catchup", "moving uploads is its own stage, after the rows are in"),
    ("migrator.files", "migrator.verify", "uploads are proven by their own read-back"),
    ("migrator.verify", "migrator.files", "verify reads the ledger's rewritten paths, not the object store"),
    ("migrator.load", "migrator.plan.build", "load reads a plan, it does not make one"),
    ("migrator.load", "migrator.plan.checks", "load reads a plan, it does not make one"),
    ("migrator.vectors", "migrator.load", "the vector lane is its own"),
    ("migrator.vectors", "migrator.verify", "the vector lane is its own"),
    ("migrator.vectors", "migrator.plan.build", "the vector lane is its own"),
    ("migrator.plan", "migrator.load", "planning writes nothing"),
    ("migrator.plan", "migrator.verify", "planning writes nothing"),
    ("migrator.sources", "migrator.plan", "readers know nothing of the stages"),
    ("migrator.sources", "migrator.load", "readers know nothing of the stages"),
    ("migrator.sources", "migrator.verify", "readers know nothing of the stages"),
    ("migrator.sources", "migrator.vectors", "readers know nothing of the stages"),
    ("migrator.catalog", "migrator.plan", "the schema catalog is read by the stages, not the reverse"),
    ("migrator.catalog", "migrator.load", "the schema catalog is read by the stages, not the reverse"),
    ("migrator.catalog", "migrator.verify", "the schema catalog is read by the stages, not the reverse"),
    ("migrator.catalog", "migrator.vectors", "the schema catalog is read by the stages, not the reverse"),
    ("migrator.catalog", "migrator.snapshot", "the schema catalog is read by the stages, not the reverse"),
    ("migrator.targets", "migrator.plan", "targets know nothing of the stages"),
    ("migrator.targets", "migrator.convert", "values reach a target already converted"),
    ("migrator.targets", "migrator.load", "targets know nothing of the stages"),
    ("migrator.targets", "migrator.verify", "targets know nothing of the stages"),
    ("migrator.targets", "migrator.vectors", "targets know nothing of the stages"),
]


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _forbidden_edges() -> list[str]:
    return [f"{m} imports {t}: {why}" for m, targets in GRAPH.items() for t in targets
            for src, dst, why in FORBIDDEN if _under(m, src) and _under(t, dst)]


def test_stages_keep_to_their_lanes():
    assert _forbidden_edges() == []


def test_the_top_level_shows_the_architecture():
    top = sorted(p.name for p in PKG.glob("*.py"))
    packages = sorted(p.name for p in PKG.iterdir() if (p / "__init__.py").exists())
    assert len(top) <= 20, top
    assert {"catalog", "plan", "convert", "load", "verify", "vectors", "sources", "targets"} <= set(packages)
    for pkg in packages:
        doc = ast.get_docstring(TREES[f"migrator.{pkg}"]) or ""
        assert "May import" in doc, f"migrator/{pkg}/__init__.py: {doc[:80]!r}"


@pytest.mark.parametrize("rule", ["cycle", "private", "forbidden"])
def test_the_checks_catch_what_they_are_for(rule, monkeypatch):
    """Each check fails on a planted violation: they are not vacuous."""
    if rule == "cycle":
        monkeypatch.setitem(GRAPH, "migrator.errors", [*GRAPH["migrator.errors"], "migrator.cli"])
        assert _cycles()
    elif rule == "private":
        monkeypatch.setitem(TREES, "migrator.load.run", ast.parse("from migrator.ledger import _x\n"
                                                                  "from migrator.targets import postgres as p\n"
                                                                  "p._y()\n"))
        assert _private_uses("migrator.load.run") == ["migrator.load.run:1 imports migrator.ledger._x",
                                                      "migrator.load.run:3 uses migrator.targets.postgres._y"]
    else:
        monkeypatch.setitem(GRAPH, "migrator.verify.run", [*GRAPH["migrator.verify.run"], "migrator.load.split"])
        assert any(e.startswith("migrator.verify.run imports migrator.load.split") for e in _forbidden_edges())
