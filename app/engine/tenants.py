"""Tenants and their webhook settings: the rows every other row belongs to.

Plain values in and out, inside the caller's transaction; the operator
commands (app/cli/admin.py) decide what to change and print the outcome.
"""

import re
from typing import Any

import psycopg

from app.sql import queries

# A slug is what people type (the CLI, X-Tenant-Id): the one rule, which
# schema.sql's CHECK on tenants.slug also holds (tests/test_tenants.py).
SLUG_PATTERN = "^[a-z0-9][a-z0-9-]{0,62}$"
SLUG_RULE = "1-63 lower-case letters, digits and dashes, starting with a letter or digit"


def is_valid_slug(slug: str) -> bool:
    """Whether `slug` may name a tenant."""
    return re.fullmatch(SLUG_PATTERN, slug) is not None


def create_tenant(conn: psycopg.Connection, slug: str, name: str) -> dict[str, Any]:
    """Store a new tenant; a slug already taken raises UniqueViolation."""
    return conn.execute(queries["insert-tenant"], {"slug": slug, "name": name}).fetchone()


def find_tenant(conn: psycopg.Connection, slug: str) -> dict[str, Any] | None:
    """The tenant with this slug, or None."""
    return conn.execute(queries["select-tenant-by-slug"], {"slug": slug}).fetchone()


def has_tenants(conn: psycopg.Connection) -> bool:
    """Whether any tenant exists yet (a new database has none)."""
    return conn.execute(queries["count-tenants"]).fetchone()["n"] > 0


def lock_webhook_settings(conn: psycopg.Connection, slug: str) -> dict[str, Any] | None:
    """The tenant's webhook settings, locked until the transaction ends, or None."""
    return conn.execute(queries["lock-tenant-webhook"], {"slug": slug}).fetchone()


def update_webhook(conn: psycopg.Connection, tenant_id: int, url: str, secret: str | None,
                   enabled: bool) -> None:
    """Set the tenant's webhook (a None secret keeps the stored one). Disabled,
    its pending events are parked; enabled, parked ones are due again."""
    conn.execute(queries["update-tenant-webhook"],
                 {"id": tenant_id, "url": url, "secret": secret, "enabled": enabled})
    conn.execute(queries["unpark-pending-events" if enabled else "park-pending-events"],
                 {"tenant_id": tenant_id})
