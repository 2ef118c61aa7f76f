"""Erasure (DESIGN 9): deleting contacts so that nothing the service keeps
still holds them.

`delete_contacts` runs in the caller's transaction and, in it: locks the
contacts the identifiers name (in id order, under the tenant's shared write
lock, as a batch does), deletes them with their tag, folder and company links,
leaves a tombstone for each in the change feed, deletes every webhook event
that carried them, writes a `contact.deleted` event per contact for a tenant
with an enabled webhook, blanks every Idempotency-Key answer that carries
them or echoes their identities, blanks those echoes in batch task outcomes,
and drops the rows of pending batch task chunks that name them. Stored
answers, outcomes and pending rows say what they mention (`mentions_of`,
`row_mentions`) when they are written, so finding them is an index look-up,
not a scan.

Plain values in and out; no Flask, no commit.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Json

from app.schemas.contacts import FORBIDDEN_CHARS
from app.sql import queries

# The identifiers a delete entry names a contact by (stored names; one each).
IDENTIFIERS = ("id", "external_id", "email", "username")
# The answer keys whose string values are a contact's identities, and the
# mention each makes (emails and usernames are stored lower-cased).
ECHOED_IDENTITIES = {"email": "email", "externalId": "externalId", "external_id": "externalId",
                     "userId": "externalId", "username": "username"}
CASE_FOLDED = ("email", "username")
# What a stored Idempotency-Key answer becomes once a contact it showed is
# erased: a retry with the key still replays (nothing is applied twice).
ERASED_ANSWER = json.dumps({"success": True, "erased": (
    "This answer showed a contact that was deleted since; it is no longer kept.")}).encode()


@dataclass(frozen=True)
class Deletion:
    """What a deletion did: the ids deleted and the entries that named nobody."""

    deleted_ids: list[int]
    not_found: list[dict[str, Any]]  # the entries as the client sent them


def delete_contacts(conn: psycopg.Connection, tenant_id: int, entries: list[dict[str, Any]],
                    sent: list[Any] | None = None) -> Deletion:
    """Erase the tenant's contacts that loaded `entries` name (each one of
    id, external_id, email, username, as stored), in the caller's
    transaction. `sent` are the entries as sent, for the not-found list.

    Locks in the order a batch-task worker takes them (a chunk, the tenant's
    shared write lock, contacts in id order): first the pending chunks that
    name the contacts as read without a lock, then the contacts; a contact
    whose identities changed in between may name one more chunk, locked last.
    """
    values = {name: sorted({e[name] for e in entries if name in e}) for name in IDENTIFIERS}
    params = {"tenant_id": tenant_id, "ids": values["id"], "external_ids": values["external_id"],
              "emails": values["email"], "usernames": values["username"]}
    seen = contact_mentions(conn.execute(queries["select-contacts-to-delete"], params).fetchall())
    pending = lock_pending_chunks(conn, tenant_id, seen)
    conn.execute(queries["lock-tenant-writes-shared"], {"tenant_id": tenant_id})
    doomed = conn.execute(queries["lock-contacts-to-delete"], params).fetchall()
    ids = [row["id"] for row in doomed]
    if ids:
        mentions = contact_mentions(doomed)
        if not set(mentions) <= set(seen):
            pending = lock_pending_chunks(conn, tenant_id, mentions)
        erase(conn, tenant_id, ids, mentions, pending)
    held = {name: {row[name] for row in doomed} for name in IDENTIFIERS}
    not_found = [raw for entry, raw in zip(entries, sent or entries, strict=True)
                 if not any(entry[name] in held[name] for name in IDENTIFIERS if name in entry)]
    return Deletion(ids, not_found)


def lock_pending_chunks(conn: psycopg.Connection, tenant_id: int,
                        mentions: list[str]) -> list[dict[str, Any]]:
    """Lock the pending chunks whose rows name any of `mentions`; return them."""
    if not mentions:
        return []
    return conn.execute(queries["lock-pending-chunks-mentioning"],
                        {"tenant_id": tenant_id, "mentions": mentions}).fetchall()


def erase(conn: psycopg.Connection, tenant_id: int, ids: list[int], mentions: list[str],
          pending: list[dict[str, Any]]) -> None:
    """Delete the locked contacts and every copy of them; tombstones and events in their place."""
    key = {"tenant_id": tenant_id, "ids": ids}
    conn.execute(queries["delete-contacts"], key)
    conn.execute(queries["delete-contact-events"], key)
    conn.execute(queries["insert-deletion-events"], key)
    conn.execute(queries["blank-answers-mentioning"],
                 {"tenant_id": tenant_id, "mentions": mentions, "body": ERASED_ANSWER})
    scrub_task_outcomes(conn, tenant_id, set(mentions))
    drop_erased_rows(conn, tenant_id, pending, set(mentions))


def drop_erased_rows(conn: psycopg.Connection, tenant_id: int, chunks: list[dict[str, Any]],
                     mentions: set[str]) -> None:
    """Drop from pending chunks the rows that name an erased contact: a write
    queued before the erasure must not bring it back, nor keep its data."""
    changed = []
    for chunk in chunks:
        rows = json.loads(chunk["rows"])
        erased = set(chunk["erased_indexes"])
        for index, row in enumerate(rows):
            if row is not None and index not in erased and mentions & set(row_mentions([row])):
                rows[index] = None
                erased.add(index)
        changed.append((chunk, rows, sorted(erased)))
    if changed:
        conn.execute(queries["drop-erased-rows"], {
            "tenant_id": tenant_id, "task_ids": [c["task_id"] for c, _, _ in changed],
            "seqs": [c["seq"] for c, _, _ in changed], "rows": [json.dumps(rows) for _, rows, _ in changed],
            "erased": [Json(erased) for _, _, erased in changed],
            "mentions": [Json(row_mentions(rows)) for _, rows, _ in changed]})


def scrub_task_outcomes(conn: psycopg.Connection, tenant_id: int, mentions: set[str]) -> None:
    """Blank, in applied chunks' outcomes, every echo of the deleted contacts' identities."""
    chunks = conn.execute(queries["select-chunk-outcomes-mentioning"],
                          {"tenant_id": tenant_id, "mentions": sorted(mentions)}).fetchall()
    if not chunks:
        return
    scrubbed = [[blank_echoes(outcome, mentions) for outcome in chunk["results"]] for chunk in chunks]
    conn.execute(queries["update-chunk-outcomes"], {
        "tenant_id": tenant_id, "task_ids": [c["task_id"] for c in chunks],
        "seqs": [c["seq"] for c in chunks], "results": [Json(r) for r in scrubbed],
        "mentions": [Json(mentions_of(r)) for r in scrubbed]})


def blank_echoes(outcome: dict[str, Any], mentions: set[str]) -> dict[str, Any]:
    """The outcome with its echoed identities that name a deleted contact set to null."""
    return {key: None if key in ECHOED_IDENTITIES and identity_mention(key, value) in mentions else value
            for key, value in outcome.items()}


def contact_mentions(contacts: Iterable[dict[str, Any]]) -> list[str]:
    """What stored answers say when they mention these contacts (`mentions_of`)."""
    mentions = set()
    for contact in contacts:
        mentions.add(f"id:{contact['id']}")
        for column, wire in (("external_id", "externalId"), ("email", "email"), ("username", "username")):
            if contact[column] is not None:
                mentions.add(identity_mention(wire, contact[column]))
    return sorted(mentions)


def row_mentions(rows: list[Any]) -> list[str]:
    """What a chunk's rows name: the identities each sends (any door's field
    names) and the contact id an update by id names. A delete names nobody's
    data, so it is not mentioned (and an erasure leaves it to do its work)."""
    mentions: set[str] = set()
    for row in rows:
        if not isinstance(row, dict) or row.get("op") == "delete":
            continue
        for key, value in row.items():
            if key in ECHOED_IDENTITIES and (mention := identity_mention(key, value)) is not None:
                mentions.add(mention)
        if type(row.get("id")) is int:
            mentions.add(f"id:{row['id']}")
    return sorted(mentions)


def mentions_of(answer: Any) -> list[str]:
    """The contacts a stored answer speaks of: 'email:…', 'externalId:…',
    'username:…' for every identity it carries as a string, and 'id:N' for
    every object that carries one with its id (a contact; not a bare
    outcome, which holds no personal data)."""
    mentions: set[str] = set()
    pending = [answer]
    while pending:
        value = pending.pop()
        if isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, dict):
            carries_identity = False
            for key, item in value.items():
                if key in ECHOED_IDENTITIES and (mention := identity_mention(key, item)) is not None:
                    mentions.add(mention)
                    carries_identity = True
                elif isinstance(item, dict | list):
                    pending.append(item)
            if carries_identity and type(value.get("id")) is int:
                mentions.add(f"id:{value['id']}")
    return sorted(mentions)


def identity_mention(key: str, value: Any) -> str | None:
    """'email:a@b.c' and the like, as a contact's stored identity spells it;
    None for a value no contact can hold (an invalid row's echo may carry a
    NUL or a lone surrogate, which no stored identity does)."""
    if not isinstance(value, str) or FORBIDDEN_CHARS.search(value):
        return None
    kind = ECHOED_IDENTITIES[key]
    text = value.strip()
    return f"{kind}:{text.lower() if kind in CASE_FOLDED else text}"


def answer_to_keep(conn: psycopg.Connection, tenant_id: int, body: bytes,
                   mentions: list[str]) -> tuple[bytes, list[str]]:
    """What to store of an Idempotency-Key answer, and what it mentions: the
    answer itself, with the contacts it shows locked so that an erasure
    waits for it and then blanks it; or, when one of them was erased since
    this transaction read it, the blank answer at once."""
    ids = sorted(int(mention[3:]) for mention in mentions if mention.startswith("id:"))
    if not ids:
        return body, mentions
    present = conn.execute(queries["lock-shown-contacts"], {"tenant_id": tenant_id, "ids": ids}).fetchall()
    if len(present) < len(ids):
        return ERASED_ANSWER, []
    return body, mentions


def purge_tombstones(conn: psycopg.Connection, retention_days: int, limit: int = 10_000) -> int:
    """Delete up to `limit` tombstones older than the retention, moving each
    tenant's purge mark (a feed cursor before it is expired); return how many."""
    return conn.execute(queries["purge-tombstones"],
                        {"retention_days": retention_days, "limit": limit}).fetchone()["purged"]
