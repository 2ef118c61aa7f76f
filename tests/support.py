"""Plain helpers shared by the test modules (fixtures live in conftest.py)."""

from collections.abc import Callable
from typing import Any

import psycopg
from flask import Flask
from flask.testing import FlaskClient

from app.db import get_conn, pool_of
from app.workers.tasks import TaskSettings, work_one

BULK_URL = "/contacts/bulk-update"
TASK_SETTINGS = TaskSettings(lease_seconds=30, max_attempts=3, tx_attempts=5, retention_days=7)


def auth_headers(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def post_bulk(client: FlaskClient, headers: dict[str, str], contacts: Any,
              url: str = BULK_URL, **options: Any):
    """POST a bulk request with JSON body {"contacts": ..., **options}."""
    return client.post(url, json={"contacts": contacts, **options}, headers=headers)


def stored_contacts(db: psycopg.Connection, tenant_id: int) -> list[dict]:
    """Every contact of a tenant, in id order, with the names of its tags and
    folders and the companyIds of its companies (in catalogue id order)."""
    return db.execute(
        "SELECT c.id, c.external_id, c.email, c.username, c.first_name, c.last_name, c.name, c.phone,"
        " c.locale, c.opt_in, c.status, c.owner_id, c.avatar_url, c.attributes, c.source_updated_at,"
        " c.created_at, c.updated_at,"
        " ARRAY(SELECT t.name FROM contact_tags l JOIN tags t ON t.tenant_id = l.tenant_id"
        "       AND t.id = l.tag_id WHERE l.tenant_id = c.tenant_id AND l.contact_id = c.id"
        "       ORDER BY t.id) AS tags,"
        " ARRAY(SELECT f.name FROM contact_folders l JOIN folders f ON f.tenant_id = l.tenant_id"
        "       AND f.id = l.folder_id WHERE l.tenant_id = c.tenant_id AND l.contact_id = c.id"
        "       ORDER BY f.id) AS folders,"
        " ARRAY(SELECT o.company_id FROM contact_companies l JOIN companies o ON o.tenant_id = l.tenant_id"
        "       AND o.id = l.company_id WHERE l.tenant_id = c.tenant_id AND l.contact_id = c.id"
        "       ORDER BY o.id) AS companies"
        " FROM contacts c WHERE c.tenant_id = %s ORDER BY c.id",
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


def drain(app: Flask, settings: TaskSettings = TASK_SETTINGS, limit: int = 1000) -> int:
    """Apply batch-task chunks as a worker does until none is due; return how many were applied."""
    applied = 0
    while applied < limit and work_one(pool_of(app), settings):
        applied += 1
    return applied
