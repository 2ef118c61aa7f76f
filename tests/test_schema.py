"""schema.sql upgrades a database made by an earlier version in place, with its data intact."""

import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from app.db import apply_schema, pool_of
from app.engine.tokens import create_token
from tests.support import auth_headers, post_bulk, stored_contacts

# schema.sql as it was before the whole contact (DESIGN 8) came.
BEFORE_WHOLE_CONTACT = Path(__file__).parent / "fixtures" / "schema_before_whole_contact.sql"


@pytest.fixture
def scratch_url(database_url: str) -> Iterator[str]:
    """A database of this test's own on the suite's server, dropped afterwards."""
    name = f"contactsync_upgrade_{secrets.token_hex(4)}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(database_url, dbname=name)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_database_of_the_earlier_schema_comes_up_with_its_data(scratch_url, make_app):
    with psycopg.connect(scratch_url, autocommit=True, row_factory=dict_row) as old:
        old.execute(BEFORE_WHOLE_CONTACT.read_text(encoding="utf-8"))
        tenant = old.execute("INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme')"
                             " RETURNING id").fetchone()
        token, _ = create_token(old, tenant["id"], ["contacts:read", "contacts:write"])
        old.execute("INSERT INTO contacts (tenant_id, external_id, email, first_name, attributes)"
                    " VALUES (%s, 'crm-1', 'a@example.com', 'Ann', '{\"plan\": \"pro\"}'),"
                    "        (%s, NULL, 'b@example.com', NULL, '{}')", (tenant["id"], tenant["id"]))
        before = stored_rows(old, tenant["id"])

        apply_schema(old)
        apply_schema(old)  # and again: idempotent on the upgraded database too

        after = stored_contacts(old, tenant["id"])
        assert [{k: c[k] for k in before[0]} for c in after] == before
        assert [(c["username"], c["status"], c["tags"], c["companies"]) for c in after] == \
            [(None, "auto", [], [])] * 2

    app = make_app(DATABASE_URL=scratch_url)
    client = app.test_client()
    headers = auth_headers(token.secret)
    response = post_bulk(client, headers, [{"externalId": "crm-1", "username": "ann",
                                            "tags": {"add": ["vip"]}}], returnResults=True)
    assert response.get_json()["data"]["results"][0]["status"] == "updated"
    contact = client.get("/contacts", query_string={"username": "ann"}, headers=headers).get_json()["data"][0]
    assert (contact["email"], contact["firstName"], [t["name"] for t in contact["tags"]]) == \
        ("a@example.com", "Ann", ["vip"])
    pool_of(app).close()


def stored_rows(conn: psycopg.Connection, tenant_id: int) -> list[dict]:
    """The columns the earlier schema had, per contact in id order."""
    return conn.execute("SELECT id, external_id, email, first_name, last_name, phone, locale, opt_in,"
                        " attributes, created_at, updated_at FROM contacts WHERE tenant_id = %s"
                        " ORDER BY id", (tenant_id,)).fetchall()


def test_a_contact_keeps_one_identity_at_least(db, tenant):
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("INSERT INTO contacts (tenant_id, first_name) VALUES (%s, 'Nobody')", (tenant["id"],))
    db.execute("INSERT INTO contacts (tenant_id, username) VALUES (%s, 'only-a-username')", (tenant["id"],))
