"""The named statements of app/sql/: each defined once with its purpose, each used."""

import ast
import re
from pathlib import Path

import pytest

from app.sql import SQL_DIR, queries

APP = SQL_DIR.parent
BLOCK = re.compile(r"^-- name: (\S+)\n(.*?)(?=^-- name: |\Z)", re.M | re.S)


def names_used_in(path: Path) -> set[str]:
    """The statement names a module looks up: the string constants inside queries[...]."""
    used = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        is_lookup = isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
        if is_lookup and node.value.id == "queries":
            used.update(c.value for c in ast.walk(node.slice)
                        if isinstance(c, ast.Constant) and isinstance(c.value, str))
    return used


def used_names() -> set[str]:
    return set().union(*(names_used_in(path) for path in APP.rglob("*.py")))


def test_every_statement_the_code_names_is_defined():
    assert used_names() - queries.keys() == set()


def test_every_defined_statement_is_used_by_the_app():
    assert queries.keys() - used_names() == set()


@pytest.mark.parametrize("path", sorted(SQL_DIR.glob("*.sql")), ids=lambda path: path.name)
def test_every_statement_says_what_it_is_for(path):
    """A comment right under the name, before the SQL (listmonk's rule)."""
    blocks = BLOCK.findall(path.read_text(encoding="utf-8"))
    assert blocks
    silent = [name for name, body in blocks if not body.lstrip().startswith("--")]
    assert silent == []


def test_a_name_chosen_by_a_condition_counts_as_used(tmp_path):
    """Both names of `queries["a" if wait else "b"]` are seen, so that neither
    is reported unused while the code picks it."""
    module = tmp_path / "module.py"
    module.write_text('conn.execute(queries["a" if wait else "b"])\n')
    assert names_used_in(module) == {"a", "b"}
