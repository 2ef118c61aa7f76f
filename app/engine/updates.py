"""Updates by identifier (Inrō's door, DESIGN 11, and the MCP tool that
answers as it does): resolve every entry's `id`, `username` or `email` in one
query, then queue the matched ones as a batch task of updates by id.

Resolving in the request lets the answer list what matched nothing at once;
the task then updates those very contacts, even if an entry changes the
email or username it was found by. Plain values in and out; no Flask.
"""

from dataclasses import dataclass
from typing import Any

import psycopg

from app.engine.outbox import iso_timestamp
from app.engine.tasks import INRO, submit_task
from app.sql import queries

IDENTIFIERS = ("id", "username", "email")


@dataclass(frozen=True)
class QueuedUpdates:
    """What a bulk update by identifier queued."""

    task_id: int
    status: str
    accepted_count: int
    not_found: list[dict[str, Any]]  # the unmatched identifiers, as sent

    def answer(self) -> dict[str, Any]:
        """What Inrō's door (and the MCP tool that answers as it does) says (DESIGN 11)."""
        return {"batch_task_id": str(self.task_id), "status": self.status,
                "accepted_count": self.accepted_count, "not_found_count": len(self.not_found),
                "not_found": self.not_found}


def inro_task_view(task: dict[str, Any]) -> dict[str, Any]:
    """A task in Inrō's words (DESIGN 11)."""
    eta, completed = task["estimated_completion_time"], task["completed_at"]
    return {"id": str(task["id"]), "status": task["status"],
            "progress_percentage": task["progress_percentage"],
            "estimated_completion_time": None if eta is None else iso_timestamp(eta),
            "total_count": task["total_count"], "processed_count": task["processed_count"],
            "failed_count": task["failed_count"], "created_at": iso_timestamp(task["created_at"]),
            "completed_at": None if completed is None else iso_timestamp(completed)}


def queue_updates(conn: psycopg.Connection, tenant_id: int, entries: list[dict[str, Any]],
                  sent: list[dict[str, Any]]) -> QueuedUpdates:
    """Resolve loaded `entries` (each one identifier and its `contact` changes)
    and queue the matched ones, in the caller's transaction. `sent` are the
    entries as the client sent them, for the not-found list."""
    found = resolve(conn, tenant_id, entries)
    rows, not_found = [], []
    for entry, raw in zip(entries, sent, strict=True):
        identifier = next(name for name in IDENTIFIERS if name in entry)
        contact_id = found[identifier].get(entry[identifier])
        if contact_id is None:
            not_found.append({identifier: raw[identifier]})
        else:
            rows.append({"id": contact_id, **entry["contact"]})
    task_id = submit_task(conn, tenant_id, INRO, rows, run_workflow=False)
    return QueuedUpdates(task_id, "pending" if rows else "completed", len(rows), not_found)


def resolve(conn: psycopg.Connection, tenant_id: int,
            entries: list[dict[str, Any]]) -> dict[str, dict[Any, int]]:
    """For each kind of identifier, which of the entries' values name a contact (value -> id)."""
    values = {name: sorted({e[name] for e in entries if name in e}) for name in IDENTIFIERS}
    records = conn.execute(queries["resolve-contact-identifiers"], {
        "tenant_id": tenant_id, "ids": values["id"], "usernames": values["username"],
        "emails": values["email"]}).fetchall()
    found: dict[str, dict[Any, int]] = {name: {} for name in IDENTIFIERS}
    for record in records:
        for name in IDENTIFIERS:
            if record[name] is not None:
                found[name][record[name]] = record["id"]
    # Only what was asked for counts: a contact found by its email must not
    # match an entry that sent its id.
    return {name: {v: cid for v, cid in found[name].items() if v in set(values[name])}
            for name in IDENTIFIERS}
