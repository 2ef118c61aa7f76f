"""Writing batches without the service: the engine alone (the floor) and the naive way.

The floor calls app.engine.upsert.upsert_contacts with rows that are already
validated, in one transaction per batch: what the service costs beyond it
is HTTP, JSON, auth and validation. The naive baseline is the pattern the
engine replaces: one SELECT and one INSERT or UPDATE per contact.
"""

from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from app.engine.upsert import CREATED, FAILED, UNCHANGED, UPDATED, upsert_contacts
from bench.drive import check_counts
from bench.seed import Tenant
from bench.workload import Batch

# The naive writer's statements, one round trip each, per contact.
NAIVE_SELECT = "SELECT id FROM contacts WHERE tenant_id = %s AND external_id = %s FOR UPDATE"
NAIVE_UPDATE = """
UPDATE contacts
SET email = coalesce(%(email)s, email), first_name = coalesce(%(first_name)s, first_name),
    attributes = attributes || %(attributes)s, updated_at = now(), change_xid = pg_current_xact_id()
WHERE tenant_id = %(tenant_id)s AND id = %(id)s"""
NAIVE_INSERT = """
INSERT INTO contacts (tenant_id, external_id, email, first_name, locale, opt_in, attributes)
VALUES (%(tenant_id)s, %(external_id)s, %(email)s, %(first_name)s, %(locale)s, %(opt_in)s,
        %(attributes)s)"""


def engine_sender(conn: psycopg.Connection, tenants: list[Tenant],
                  scenario: str) -> Callable[[Batch], None]:
    """A sender for one thread that runs the engine on its own connection."""
    tenant_ids = {t.index: t.id for t in tenants}

    def send(batch: Batch) -> None:
        with conn.transaction():
            result = upsert_contacts(conn, tenant_ids[batch.tenant], batch.rows)
        counts = Counter(o.status for o in result.outcomes)
        check_counts(batch, counts[CREATED], counts[UPDATED], counts[UNCHANGED], counts[FAILED],
                     f"floor {scenario}")

    return send


def naive_write(conn: psycopg.Connection, tenant_id: int, row: dict[str, Any]) -> str:
    """One contact the naive way: look it up by externalId, then update or insert."""
    found = conn.execute(NAIVE_SELECT, (tenant_id, row["external_id"])).fetchone()
    params = {"tenant_id": tenant_id, "email": row.get("email"), "first_name": row.get("first_name"),
              "attributes": Jsonb(row.get("attributes", {}))}
    if found is not None:
        conn.execute(NAIVE_UPDATE, {**params, "id": found["id"]})
        return UPDATED
    conn.execute(NAIVE_INSERT, {**params, "external_id": row["external_id"],
                                "locale": row.get("locale"), "opt_in": row.get("opt_in")})
    return CREATED


def naive_sender(conn: psycopg.Connection, tenants: list[Tenant]) -> Callable[[Batch], None]:
    """A sender for one thread that writes each batch row by row in one transaction."""
    tenant_ids = {t.index: t.id for t in tenants}

    def send(batch: Batch) -> None:
        with conn.transaction():
            statuses = Counter(naive_write(conn, tenant_ids[batch.tenant], row)
                               for _, row in batch.rows)
        check_counts(batch, statuses[CREATED], statuses[UPDATED], 0, 0, "naive")

    return send
