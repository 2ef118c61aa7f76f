"""Tenants (app/engine/tenants.py): the one slug rule, held by the code and by schema.sql."""

import psycopg
import pytest

from app.engine.tenants import SLUG_PATTERN, create_tenant, is_valid_slug


def test_the_schema_checks_the_same_slug_rule(db):
    """schema.sql cannot import Python: its CHECK must say the same pattern."""
    definition = db.execute(
        "SELECT pg_get_constraintdef(oid) AS definition FROM pg_constraint"
        " WHERE conrelid = 'tenants'::regclass AND contype = 'c'").fetchone()["definition"]
    assert f"'{SLUG_PATTERN}'" in definition


@pytest.mark.parametrize("slug, valid", [
    ("acme", True), ("a", True), ("0-9", True), ("a" * 63, True),
    ("", False), ("-acme", False), ("Acme", False), ("a" * 64, False), ("acme\n", False), ("ac me", False),
])
def test_code_and_database_agree_on_every_slug(db, slug, valid):
    assert is_valid_slug(slug) is valid
    try:
        with db.transaction():
            create_tenant(db, slug, slug)
            stored = True
            raise psycopg.Rollback()
    except psycopg.errors.CheckViolation:
        stored = False
    assert stored is valid
