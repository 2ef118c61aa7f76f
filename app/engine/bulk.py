"""The bulk path every front shares: raw rows in, per-row outcomes and the summary out.

A front (an HTTP door today; the batch-task worker and the MCP tools next)
calls `bulk_upsert` with a connection inside its own transaction, a tenant,
the rows exactly as the client sent them, and the options. In that call:

1. one read finds the stored contacts that the rows' identities, as sent,
   most likely reach; their addresses are known, so validation skips
   email-validator for them (app/schemas/contacts.py, KNOWN_ADDRESSES);
2. every row is validated (app/schemas/contacts.py); an invalid row becomes a failure
   with every error named, and the others go on;
3. the valid rows are planned (app/engine/upsert.py) on what step 1 read, and
   on what their loaded identities reach beyond it, read now (rarely: a
   loaded identity differs from the one sent when email-validator
   normalises an address): matched, applied in memory in request order,
   each with its outcome;
4. in all-or-nothing mode any failure, invalid or conflicting, raises
   `BatchRejected` before anything is written;
5. the net result is written and, with `run_workflow`, its contacts' events
   too, in the caller's transaction;
6. the report: counts, failures in request order, per-row results on request.

`upsert_one` is the same path for one already validated contact
(`POST /contacts`), which answers with the contact as written.

Plain values in and out; no Flask, and no commit: the caller owns the
transaction, and retries it (with `exclusive=True`) on a race.
"""

from dataclasses import dataclass
from typing import Any

import psycopg
from marshmallow import ValidationError

from app.engine.erasure import delete_contacts
from app.engine.outbox import enqueue_contact_events, wire_names
from app.engine.reads import find_contact
from app.engine.upsert import (
    CONTACT_EXISTS,
    CREATED,
    FAILED,
    STALE,
    UNCHANGED,
    UPDATED,
    Batch,
    Contact,
    RowOutcome,
    Snapshot,
    changes_relations,
    plan_upsert,
    read_snapshot,
)
from app.schemas.contacts import KNOWN_ADDRESSES, identity_candidates, known_address_candidates, load_row
from app.sql import queries

DELETED = "deleted"  # the outcome of a row of Intercom's bulk delete that erased its contact
MAX_ECHOED_CHARS = 320  # a failure echoes the row's identities, not megabytes of them


@dataclass(frozen=True)
class BulkOptions:
    """What a bulk request asks for besides its rows."""

    atomic: bool = False  # any failed row: BatchRejected, nothing written
    run_workflow: bool = False  # an event for every contact created or changed
    return_results: bool = False  # one `results` entry per row in the summary
    dry_run: bool = False  # plan and report, write nothing (DESIGN 15)


@dataclass(frozen=True)
class BulkReport:
    """What a bulk request did: every row's outcome and the answer's `data`."""

    outcomes: list[RowOutcome]
    summary: dict[str, Any]


class BatchRejected(Exception):
    """All-or-nothing mode and some rows failed: nothing was written."""

    def __init__(self, failures: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(failures)} rows failed")
        self.failures = failures


class ContactConflict(Exception):
    """The one contact's identities belong to different contacts."""

    def __init__(self, conflict: dict[str, int | None]) -> None:
        super().__init__("identity conflict")
        self.conflict = conflict  # {"externalIdContactId": .., "emailContactId": .., "usernameContactId": ..}


def bulk_upsert(conn: psycopg.Connection, tenant_id: int, rows: list[Any], options: BulkOptions,
                *, exclusive: bool = False) -> BulkReport:
    """Validate, plan and write raw `rows` for the tenant in the caller's transaction.

    `exclusive` (for a retry, which means contention) first takes the
    tenant's write lock exclusively, so that the retry cannot fail again.
    """
    # One read before validation: the contacts the rows' identities most
    # likely reach, whose addresses then skip email-validator; what a loaded
    # row reaches beyond them is read after (Snapshot.reaching).
    snapshot = read_snapshot(conn, tenant_id, identity_candidates(rows),
                             with_links=changes_relations(rows), exclusive=exclusive)
    valid, invalid = validate_rows(rows, snapshot.emails())
    return write_valid_rows(conn, tenant_id, rows, valid, invalid, options, exclusive=exclusive,
                            snapshot=snapshot)


def bulk_update_by_id(conn: psycopg.Connection, tenant_id: int, rows: list[dict[str, Any]],
                      options: BulkOptions, *, exclusive: bool = False) -> BulkReport:
    """Write updates by contact id (Inrō's door, validated and resolved when it
    was submitted) in the caller's transaction: `folder_ids` become the exact
    set of those folders, and a row naming a folder the tenant lacks, or a
    contact that is gone, fails alone."""
    names = folder_names(conn, tenant_id, rows)
    valid, invalid = [], []
    for index, row in enumerate(rows):
        update = {key: value for key, value in row.items() if key != "folder_ids"}
        if "folder_ids" in row:
            unknown = [folder_id for folder_id in row["folder_ids"] if folder_id not in names]
            if unknown:
                invalid.append({**row_identity(index, row), "code": "unknown_folder",
                                "message": "The tenant has no folder with these ids.",
                                "errors": {"folder_ids": unknown}})
                continue
            update["folders"] = {"set": [names[folder_id] for folder_id in row["folder_ids"]]}
        valid.append((index, update))
    return write_valid_rows(conn, tenant_id, rows, valid, invalid, options, exclusive=exclusive)


def bulk_intercom(conn: psycopg.Connection, tenant_id: int, rows: list[dict[str, Any]],
                  options: BulkOptions, *, exclusive: bool = False) -> BulkReport:
    """Write Intercom's rows (validated when they were submitted,
    app/schemas/intercom.py) in the caller's transaction: `op` "update" by
    contact id (an id that names no contact fails alone, not_found) or
    "create" (strict: an external_id or email already held fails alone,
    contact_exists). Tag ids become names; an id the tenant lacks is skipped
    and the rest of the row applies, as Intercom's spec says."""
    if rows and rows[0]["op"] == "delete":  # a request of Intercom's is all deletes or none
        return bulk_delete_by_id(conn, tenant_id, rows)
    names = tag_names(conn, tenant_id, rows)
    # The rows as a failure entry echoes them (externalId, email).
    echoed = [{"externalId": row.get("external_id"), "email": row.get("email")} for row in rows]
    valid, invalid = [], []
    for index, row in enumerate(rows):
        if row["op"] == "update" and row["id"] is None:  # an id that can be no contact's ("abc123")
            invalid.append({**row_identity(index, echoed[index]), "code": "not_found",
                            "message": "No contact has this id."})
            continue
        change = {key: value for key, value in row.items() if key not in ("op", "tag_ids")}
        if row["op"] == "create":
            change["create_only"] = True
        if "tag_ids" in row:
            change["tags"] = {key: [names[tag_id] for tag_id in row["tag_ids"][key] if tag_id in names]
                              for key in ("add", "remove")}
        valid.append((index, change))
    return write_valid_rows(conn, tenant_id, echoed, valid, invalid, options, exclusive=exclusive)


def bulk_delete_by_id(conn: psycopg.Connection, tenant_id: int, rows: list[dict[str, Any]]) -> BulkReport:
    """Erase the tenant's contacts the rows name by id (app/engine/erasure.py),
    in the caller's transaction: each row is `deleted`, or fails alone with
    not_found when its id names no contact of the tenant (any more). An id
    sent twice is erased once and both rows are `deleted`."""
    ids = sorted({row["id"] for row in rows if row["id"] is not None})
    deleted = set(delete_contacts(conn, tenant_id, [{"id": contact_id} for contact_id in ids]).deleted_ids)
    outcomes, failures = [], []
    for index, row in enumerate(rows):
        if row["id"] in deleted:
            outcomes.append(RowOutcome(index, DELETED, Contact(id=row["id"])))
        else:
            failures.append({"index": index, "externalId": None, "email": None, "code": "not_found",
                             "message": "No contact has this id."})
    return BulkReport(outcomes, {"totalCount": len(rows), "failures": failures})


def tag_names(conn: psycopg.Connection, tenant_id: int, rows: list[dict[str, Any]]) -> dict[int, str]:
    """The name of every tag id the rows send (ids the tenant lacks are absent)."""
    tag_ids = sorted({tag_id for row in rows for key in ("add", "remove")
                      for tag_id in row.get("tag_ids", {}).get(key, ())})
    if not tag_ids:
        return {}
    found = conn.execute(queries["select-tags-by-ids"], {"tenant_id": tenant_id, "ids": tag_ids}).fetchall()
    return {row["id"]: row["name"] for row in found}


def folder_names(conn: psycopg.Connection, tenant_id: int, rows: list[dict[str, Any]]) -> dict[int, str]:
    """The name of every folder id the rows send (ids the tenant lacks are absent)."""
    folder_ids = sorted({folder_id for row in rows for folder_id in row.get("folder_ids", ())})
    if not folder_ids:
        return {}
    found = conn.execute(queries["select-folders-by-ids"],
                         {"tenant_id": tenant_id, "ids": folder_ids}).fetchall()
    return {row["id"]: row["name"] for row in found}


def write_valid_rows(conn: psycopg.Connection, tenant_id: int, rows: list[Any],
                     valid: list[tuple[int, dict]], invalid: list[dict], options: BulkOptions,
                     *, exclusive: bool, snapshot: Snapshot | None = None) -> BulkReport:
    """Plan and write the valid rows; report them with the invalid ones.
    `snapshot`: what this transaction read for them already (plan_upsert)."""
    batch = plan_upsert(conn, tenant_id, valid, exclusive=exclusive, snapshot=snapshot)
    # All-or-nothing: planned first, so that the failures name conflicts as
    # well as invalid rows; the caller's transaction then rolls back.
    if options.atomic and (invalid or batch.failed):
        raise BatchRejected(all_failures(rows, invalid, batch.outcomes))
    if not options.dry_run:
        write_batch(conn, batch, options.run_workflow)
    # After the write: a conflict with a contact this batch created names its new id.
    failures = all_failures(rows, invalid, batch.outcomes)
    report = summary(len(rows), batch.outcomes, failures, options.return_results)
    if options.dry_run:
        report["dryRun"] = True
    return BulkReport(batch.outcomes, report)


@dataclass(frozen=True)
class OneUpsert:
    """What upserting one contact did (or, in a dry run, would do)."""

    status: str
    changed_fields: list[str]  # wire names; empty unless updated
    contact: dict[str, Any] | None  # as this transaction wrote it; None in a dry run


def upsert_one(conn: psycopg.Connection, tenant_id: int, row: dict[str, Any], *,
               run_workflow: bool, dry_run: bool = False, exclusive: bool = False) -> OneUpsert:
    """Plan and write one validated row (plan only, in a dry run). Raises
    ContactConflict instead of writing."""
    batch = plan_upsert(conn, tenant_id, [(0, row)], exclusive=exclusive)
    [outcome] = batch.outcomes
    if outcome.status == FAILED or outcome.contact is None:
        conflict = conflict_ids(outcome)
        raise ContactConflict({key: conflict[key] for key in
                               ("externalIdContactId", "emailContactId", "usernameContactId")})
    changed = wire_names(outcome.changed)
    if dry_run:
        return OneUpsert(outcome.status, changed, None)
    write_batch(conn, batch, run_workflow)
    # Read back in the same transaction: the answer is this request's result, not a later one.
    contact = find_contact(conn, tenant_id, contact_id=outcome.contact.id)
    assert contact is not None  # written just now, in this transaction
    return OneUpsert(outcome.status, changed, contact)


def validate_rows(rows: list[Any], known: frozenset[str]) -> tuple[list[tuple[int, dict]], list[dict]]:
    """Load every row; return (index, row) pairs that are valid and failures for the rest.
    `known` are addresses the tenant holds, which need no email-validator."""
    token = KNOWN_ADDRESSES.set(known)
    try:
        valid, invalid = [], []
        for index, raw in enumerate(rows):
            try:
                valid.append((index, load_row(raw)))
            except ValidationError as exc:
                invalid.append({**row_identity(index, raw), "code": "invalid_contact",
                                "message": "The contact is invalid.", "errors": exc.messages})
        return valid, invalid
    finally:
        KNOWN_ADDRESSES.reset(token)


def known_addresses(conn: psycopg.Connection, tenant_id: int, rows: list[Any]) -> frozenset[str]:
    """Which of the rows' emails the tenant's contacts already hold: one
    indexed look-up, for validating rows ahead of their write (a task
    worker's prepare_chunk); bulk_upsert learns them from its first read."""
    candidates = known_address_candidates(rows)
    if not candidates:
        return frozenset()
    found = conn.execute(queries["select-known-emails"],
                         {"tenant_id": tenant_id, "emails": list(candidates)}).fetchall()
    return frozenset(row["email"] for row in found)


def write_batch(conn: psycopg.Connection, batch: Batch, run_workflow: bool) -> None:
    """Write a planned batch and, with `run_workflow`, its contacts' events, in the
    caller's transaction: an event exists exactly when its change was committed."""
    batch.write(conn)
    if run_workflow:
        enqueue_contact_events(conn, batch.tenant_id, batch.written)


def all_failures(rows: list[Any], invalid: list[dict], outcomes: list[RowOutcome]) -> list[dict]:
    """Invalid rows and conflicting rows together, in request order."""
    conflicts = [exists_failure(o, rows[o.index]) if o.code == CONTACT_EXISTS
                 else conflict_failure(o, rows[o.index]) if o.conflict is not None
                 else gone_failure(o, rows[o.index]) for o in outcomes if o.status == FAILED]
    return sorted(invalid + conflicts, key=lambda failure: failure["index"])


def gone_failure(outcome: RowOutcome, raw: Any) -> dict[str, Any]:
    """The failure entry of an update by id whose contact no longer exists."""
    return {**row_identity(outcome.index, raw), "code": "not_found",
            "message": "No contact has this id (any more)."}


def row_identity(index: int, raw: Any) -> dict[str, Any]:
    """The row's index, externalId and email as sent (clipped), for a failure entry."""
    sent = raw if isinstance(raw, dict) else {}
    external_id = sent.get("externalId", sent.get("userId"))
    return {"index": index, "externalId": echo(external_id), "email": echo(sent.get("email"))}


def echo(value: Any) -> Any:
    """A scalar sent by the client, clipped; anything else is not echoed."""
    if isinstance(value, str):
        return value[:MAX_ECHOED_CHARS]
    return value if isinstance(value, int | float | bool) else None


def conflict_failure(outcome: RowOutcome, raw: Any) -> dict[str, Any]:
    """The failure entry of a row whose identities belong to two contacts."""
    return {
        **row_identity(outcome.index, raw),
        "code": "identity_conflict",
        "message": "The identities of this row (externalId, email, username) belong to different contacts.",
        "conflict": conflict_ids(outcome),
    }


def exists_failure(outcome: RowOutcome, raw: Any) -> dict[str, Any]:
    """The failure entry of a strict create whose externalId or email a contact holds."""
    return {**conflict_failure(outcome, raw), "code": CONTACT_EXISTS,
            "message": "A contact with this externalId or email exists; a strict create changes nothing."}


def conflict_ids(outcome: RowOutcome) -> dict[str, int | None]:
    """Which contacts hold a conflicting row's externalId and email."""
    conflict = outcome.conflict
    assert conflict is not None
    holders = {"externalId": conflict.external_id_contact, "email": conflict.email_contact,
               "username": conflict.username_contact}
    # A contact that an earlier row of this request creates has no id until
    # it is written (never, in all-or-nothing mode): the row is named too.
    return {**{f"{key}ContactId": contact and contact.id for key, contact in holders.items()},
            **{f"{key}RowIndex": created_by_index(contact) for key, contact in holders.items()}}


def created_by_index(contact: Contact | None) -> int | None:
    return contact.created_by_index if contact is not None else None


def summary(total: int, outcomes: list[RowOutcome], failures: list[dict],
            with_results: bool) -> dict[str, Any]:
    """The answer's data: counts, failures, and per-row results on request."""
    counts = {status: 0 for status in (CREATED, UPDATED, UNCHANGED, STALE)}
    for outcome in outcomes:
        if outcome.status != FAILED:
            counts[outcome.status] += 1
    success = sum(counts.values())
    data: dict[str, Any] = {
        "totalCount": total,
        "successCount": success,
        "failedCount": total - success,
        "createdCount": counts[CREATED],
        "updatedCount": counts[UPDATED],
        "unchangedCount": counts[UNCHANGED],
        "staleCount": counts[STALE],
        "failures": failures,
    }
    if with_results:
        data["results"] = row_results(total, outcomes)
    return data


def row_outcomes(report: BulkReport) -> list[dict[str, Any]]:
    """Every row's outcome in row order, a failed row with its failure entry:
    what a batch task keeps per row."""
    outcomes = row_results(report.summary["totalCount"], report.outcomes)
    for failure in report.summary["failures"]:
        outcomes[failure["index"]].update(failure)
    return outcomes


def row_results(total: int, outcomes: list[RowOutcome]) -> list[dict[str, Any]]:
    """One entry per row in request order; rows that never reached the engine failed."""
    results: list[dict[str, Any]] = [{"index": i, "id": None, "status": FAILED} for i in range(total)]
    for outcome in outcomes:
        if outcome.status != FAILED and outcome.contact is not None:
            result = {"index": outcome.index, "id": outcome.contact.id, "status": outcome.status}
            if outcome.status == UPDATED:
                result["changedFields"] = wire_names(outcome.changed)
            results[outcome.index] = result
    return results
