"""The layers of app/ (DESIGN 1), read from the source itself.

Imports run fronts (web, mcp, cli) -> workers -> engine -> schemas and SQL,
never back; the engine, the schemas and the SQL loader reach no Flask and no
front, however indirectly; and only the engine (with app/db.py's plumbing)
runs queries.
"""

import ast
import re
from functools import cache
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"

# The layered packages and their rank: a module may import only its own
# package or a package of lower rank. Fronts do not import each other.
RANKS = {"web": 3, "mcp": 3, "cli": 3, "workers": 2, "engine": 1, "schemas": 0, "sql": 0}
FRONTS = {"web", "mcp", "cli"}
# Packages whose modules must not reach Flask, directly or through app modules.
FLASK_FREE = ("engine", "schemas", "sql")
FLASK_PACKAGES = ("flask", "werkzeug", "flask_limiter", "flask_swagger_ui")
# Where queries may run: the engine, and db.py's pool plumbing (ping, schema).
QUERY_RUNNERS = ("app.engine", "app.db", "app.sql")
EXECUTING_METHODS = {"execute", "executemany", "copy", "cursor", "stream"}
SQL_TEXT = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|TRUNCATE|LOCK)\s")


def module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(APP.rglob("*.py"))}


@cache
def tree_of(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(encoding="utf-8"))


@cache
def imports_of(module: str) -> frozenset[str]:
    """Every module `module` imports by name (absolute form)."""
    names: set[str] = set()
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree_of(module)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            # `from app import cli` imports the module app.cli
            names.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES)
    return frozenset(names)


def app_imports(module: str) -> set[str]:
    """The app modules `module` imports (the `app` package itself not counted:
    importing any app module runs it, whoever imports)."""
    return {name for name in imports_of(module) if name in MODULES and name != "app"}


def reachable(module: str) -> set[str]:
    """Every app module `module` imports, directly or through other app modules."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        for name in app_imports(todo.pop()):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANKS else None


def test_the_layered_packages_exist():
    assert {layer for layer in map(layer_of, MODULES) if layer} == set(RANKS)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    layer = layer_of(module)
    if layer is None:
        return  # plumbing (factory, config, db, errors, auth): checked by what imports it
    wrong = sorted(name for name in app_imports(module)
                   if (other := layer_of(name)) is not None and other != layer
                   and (RANKS[other] > RANKS[layer] or (other in FRONTS and layer in FRONTS)))
    assert not wrong, f"{module} ({layer}) imports a higher layer or another front: {wrong}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer_of(m) in FLASK_FREE))
def test_the_core_reaches_no_flask_and_no_front(module):
    reached = {module, *reachable(module)}
    fronts = sorted(name for name in reached if layer_of(name) in FRONTS | {"workers"})
    assert not fronts, f"{module} reaches {fronts}"
    flask = sorted(f"{name} imports {imported}" for name in reached for imported in imports_of(name)
                   if imported.split(".")[0] in FLASK_PACKAGES)
    assert not flask, f"{module} reaches Flask: {flask}"


def runs_queries(module: str) -> list[str]:
    """Where `module` touches a connection's execute, the named queries or SQL text."""
    found = []
    for node in ast.walk(tree_of(module)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Attribute) and node.attr in EXECUTING_METHODS:
            found.append(f"line {line}: .{node.attr}")
        elif isinstance(node, ast.Name) and node.id == "queries":
            found.append(f"line {line}: queries")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_TEXT.match(node.value):
            found.append(f"line {line}: SQL text")
    if "app.sql" in imports_of(module):
        found.append("imports app.sql")
    return found


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.startswith(QUERY_RUNNERS)))
def test_only_the_engine_runs_queries(module):
    assert runs_queries(module) == [], f"{module} runs queries itself"


def test_the_query_check_sees_the_engines_queries():
    """The check above must see each way a module runs SQL, or its silence
    about the fronts would mean nothing."""
    found = " ".join(runs_queries("app.engine.upsert"))
    assert ".execute" in found and "queries" in found and "imports app.sql" in found
