"""The workflow outbox: events written with the upsert, claimed and settled by dispatchers.

An event is written in the transaction of the request that changed its
contact (`enqueue_contact_events`), so it exists exactly when the change was
committed. Dispatchers claim one due event at a time with a lease
(`claim_due_event`), deliver it with no transaction open, and settle it
(`settle_event`). Plain values in, plain values out: no Flask, no HTTP here.
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Json

from app.engine.upsert import Contact
from app.sql import queries

CONTACT_CREATED, CONTACT_UPDATED = "contact.created", "contact.updated"

# The engine's field names as the wire (and the event's changedFields) spell them.
WIRE_FIELD_NAMES = {
    "external_id": "externalId", "email": "email", "username": "username", "first_name": "firstName",
    "last_name": "lastName", "name": "name", "phone": "phone", "locale": "locale", "opt_in": "optIn",
    "status": "status", "owner_id": "ownerId", "avatar_url": "avatarUrl", "attributes": "attributes",
    "tags": "tags", "folders": "folders", "companies": "companies",
    "source_updated_at": "sourceUpdatedAt",
}


@dataclass(frozen=True)
class ClaimedEvent:
    """An event a dispatcher holds the lease of, with where and how to send it."""

    tenant_id: int
    id: int
    event_id: str
    type: str
    contact: str | None  # the stored json text, keys in documented order
    changed_fields: list[str]
    batch_task: str | None  # a batch_task.completed event's task, as json text
    created_at: datetime
    attempts: int  # including the one this claim starts
    tenant_slug: str
    webhook_url: str
    webhook_secret: str
    lease_id: uuid.UUID


def iso_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a Z: the one form timestamps are sent in."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def wire_names(fields: set[str] | frozenset[str]) -> list[str]:
    """Engine field names as the wire spells them, in the documented order."""
    return [wire for name, wire in WIRE_FIELD_NAMES.items() if name in fields]


def changed_field_names(contact: Contact) -> str:
    """The contact's changed fields over the whole request, comma-joined (an event's changedFields)."""
    return ",".join(wire_names(contact.changed_fields))


def enqueue_contact_events(conn: psycopg.Connection, tenant_id: int, contacts: list[Contact]) -> int:
    """Write one event per written contact, inside the caller's transaction.

    A contact this request created is `contact.created`, any other
    `contact.updated`. Writes nothing while the tenant's webhook is not
    enabled. Returns the number of events written.
    """
    if not contacts:
        return 0
    cursor = conn.execute(queries["insert-contact-events"], {
        "tenant_id": tenant_id,
        "contact_ids": [c.id for c in contacts],
        "types": [CONTACT_CREATED if c.created_by_index is not None else CONTACT_UPDATED
                  for c in contacts],
        "changed_fields": [changed_field_names(c) for c in contacts],
    })
    return cursor.rowcount


def enqueue_task_event(conn: psycopg.Connection, tenant_id: int, task: dict[str, Any]) -> int:
    """Write a `batch_task.completed` event with the task as the tenant's
    webhook receives it, in the caller's transaction; nothing while the
    tenant's webhook is not enabled. Returns the number of events written."""
    return conn.execute(queries["insert-task-event"],
                        {"tenant_id": tenant_id, "batch_task": Json(task)}).rowcount


def claim_due_event(conn: psycopg.Connection, lease_seconds: float) -> ClaimedEvent | None:
    """Claim the oldest due event for `lease_seconds`, or None when none is due."""
    lease_id = uuid.uuid4()
    row = conn.execute(queries["claim-due-event"],
                       {"lease_seconds": float(lease_seconds), "lease_id": lease_id}).fetchone()
    return None if row is None else ClaimedEvent(**row, lease_id=lease_id)


def settle_event(conn: psycopg.Connection, event: ClaimedEvent, *, delivered: bool,
                 error: str | None, retry_in: float | None) -> None:
    """Record an attempt: delivered, due again in `retry_in` seconds, or (None) dead.

    Does nothing when the lease ran out and another dispatcher claimed the
    event since: that dispatcher's attempt is the one that counts.
    """
    key: dict[str, Any] = {"tenant_id": event.tenant_id, "id": event.id, "lease_id": event.lease_id}
    if delivered:
        conn.execute(queries["mark-event-delivered"], key)
    elif retry_in is not None:
        conn.execute(queries["reschedule-event"],
                     {**key, "error": error, "retry_in_seconds": float(retry_in)})
    else:
        conn.execute(queries["mark-event-dead"], {**key, "error": error})


def purge_finished_events(conn: psycopg.Connection, retention_days: int, limit: int = 10_000) -> int:
    """Delete up to `limit` delivered or dead events older than the retention; return how many."""
    return conn.execute(queries["purge-finished-events"],
                        {"retention_days": retention_days, "limit": limit}).rowcount


def count_events(conn: psycopg.Connection, slug: str | None = None) -> list[dict[str, Any]]:
    """Pending, delivered and dead events per tenant (one tenant when `slug` is given)."""
    return conn.execute(queries["count-events-by-tenant"], {"slug": slug}).fetchall()
