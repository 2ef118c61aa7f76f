"""Plain helpers shared by the test modules (fixtures live in conftest.py)."""

from collections.abc import Callable
from typing import Any

import psycopg
from flask import Flask
from flask.testing import FlaskClient

from app.db import get_conn

BULK_URL = "/contacts/bulk-update"


def auth_headers(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def post_bulk(client: FlaskClient, headers: dict[str, str], contacts: Any,
              url: str = BULK_URL, **options: Any):
    """POST a bulk request with JSON body {"contacts": ..., **options}."""
    return client.post(url, json={"contacts": contacts, **options}, headers=headers)


def stored_contacts(db: psycopg.Connection, tenant_id: int) -> list[dict]:
    """Every contact of a tenant, in id order."""
    return db.execute(
        "SELECT id, external_id, email, first_name, last_name, phone, locale, opt_in,"
        " attributes, created_at, updated_at FROM contacts WHERE tenant_id = %s ORDER BY id",
        (tenant_id,)).fetchall()


def in_app_transaction(app: Flask, work: Callable[[psycopg.Connection], Any]) -> Any:
    """Run work(conn) on one of the app's pooled connections, in a transaction."""
    with app.app_context(), get_conn() as conn, conn.transaction():
        return work(conn)


def stored_events(db: psycopg.Connection, tenant_id: int) -> list[dict]:
    """Every workflow event of a tenant, in the order written."""
    return db.execute(
        "SELECT event_id, type, contact_id, contact, changed_fields, status, attempts, last_error"
        " FROM webhook_events WHERE tenant_id = %s ORDER BY id", (tenant_id,)).fetchall()
