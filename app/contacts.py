"""Contacts blueprint: the writes, each parse -> validate -> engine -> response.

| door                          | rows   | invalid rows                   |
| POST /contacts/bulk-update    | 1-1000 | reported; valid rows written   |
| POST /v1/contacts/bulk-update | 1-100  | reported (AutoSend-compatible) |
| POST /contacts/bulk           | 1-1000 | 400, nothing written (MailingCore-compatible) |
| POST /contacts                | 1      | 400 validation_failed, 409 identity_conflict |
"""

import json
from collections.abc import Mapping
from typing import Any

import psycopg
from flask import Blueprint, current_app, g, request
from marshmallow import ValidationError

from app.auth import require_scope
from app.db import get_conn
from app.errors import (
    BatchSize,
    IdentityConflict,
    InvalidJson,
    InvalidRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
from app.outbox import enqueue_contact_events
from app.reads import find_contact
from app.request_log import note_counts
from app.schemas import (
    KNOWN_ADDRESSES,
    bulk_request_schema,
    contact_upsert_schema,
    known_address_candidates,
    load_row,
)
from app.sql import queries
from app.upsert import CREATED, FAILED, UNCHANGED, UPDATED, Batch, Contact, RowOutcome, plan_upsert
from app.writes import idempotency_of_request, replay_if_answered, run_write

bp = Blueprint("contacts", __name__)

AUTOSEND_MAX_ROWS = 100
COUNT_KEYS = ("totalCount", "createdCount", "updatedCount", "unchangedCount", "failedCount")
MAX_ECHOED_CHARS = 320  # a failure echoes the row's identities, not megabytes of them


@bp.post("/contacts/bulk-update")
@require_scope("contacts:write")
def bulk_update():
    """Native door: partial success, `atomic: true` for all-or-nothing."""
    return bulk_upsert(max_rows=current_app.config["BULK_MAX"], always_atomic=False)


@bp.post("/v1/contacts/bulk-update")
@require_scope("contacts:write")
def autosend_bulk_update():
    """AutoSend's door: at most 100 rows, partial success."""
    return bulk_upsert(max_rows=autosend_max_rows(current_app.config), always_atomic=False)


def autosend_max_rows(config: Mapping[str, Any]) -> int:
    """AutoSend's door takes 100 rows, or fewer when CONTACTSYNC_BULK_MAX says so."""
    return min(AUTOSEND_MAX_ROWS, config["BULK_MAX"])


@bp.post("/contacts/bulk")
@require_scope("contacts:write")
def mailingcore_bulk():
    """MailingCore's door: any invalid or conflicting row rejects the batch."""
    return bulk_upsert(max_rows=current_app.config["BULK_MAX"], always_atomic=True)


@bp.post("/contacts")
@require_scope("contacts:write")
def upsert_contact():
    """One contact, the same rules as a bulk row: 201 when created, else 200."""
    raw = read_body()
    idempotency = idempotency_of_request(raw)
    if idempotency is not None and (replay := replay_if_answered(idempotency)) is not None:
        return replay
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be one contact object.")
    try:
        row = contact_upsert_schema.load(body)
    except ValidationError as exc:
        raise ValidationFailed("The contact is invalid; nothing was written.",
                               details={"errors": exc.messages}) from None
    run_workflow = row.pop("run_workflow")
    tenant_id = g.principal.tenant_id

    def work(conn: psycopg.Connection, attempt: int) -> tuple[dict, int]:
        batch = plan_upsert(conn, tenant_id, [(0, row)], exclusive=attempt > 1)
        [outcome] = batch.outcomes
        if outcome.status == FAILED or outcome.contact is None:
            conflict = conflict_failure(outcome, body)["conflict"]
            raise IdentityConflict(details={"conflict": {key: conflict[key] for key in
                                                         ("externalIdContactId", "emailContactId")}})
        write_batch(conn, batch, run_workflow)
        # Read back in the same transaction: the answer is this request's result, not a later one.
        contact = find_contact(conn, tenant_id, contact_id=outcome.contact.id)
        return ({"success": True, "data": {"status": outcome.status, "contact": contact}},
                201 if outcome.status == CREATED else 200)

    return run_write(work, idempotency)


def read_body() -> bytes:
    """The request body's bytes: 415 unless JSON, then 413 when too large."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType()
    limit = current_app.config["MAX_BODY_BYTES"]
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(details={"maxBytes": limit})
    return request.get_data(cache=False)  # Werkzeug stops a chunked body at the limit (413)


def parse_json(raw: bytes) -> Any:
    """The body as JSON, or 400 `invalid_json`."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError: bad JSON and over-long integers; RecursionError: absurd nesting.
        raise InvalidJson(details={"reason": json_error_reason(exc)}) from None


class NonStandardConstant(ValueError):
    """NaN, Infinity or -Infinity in a body."""


def reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON, whatever Python's parser allows."""
    raise NonStandardConstant(f"{name} is not a JSON value.")


def json_error_reason(exc: Exception) -> str:
    """A short description of why the body is not JSON, in our words."""
    if isinstance(exc, UnicodeDecodeError):
        return "The body is not valid UTF-8."
    if isinstance(exc, RecursionError):
        return "The JSON is nested too deeply."
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}."
    if isinstance(exc, NonStandardConstant):
        return str(exc)
    return "A number in the JSON has too many digits."  # Python's 4300-digit limit


def bulk_upsert(max_rows: int, always_atomic: bool):
    """Validate a bulk request, run the engine in one transaction, report every row."""
    raw = read_body()
    idempotency = idempotency_of_request(raw)
    if idempotency is not None and (replay := replay_if_answered(idempotency)) is not None:
        return replay
    try:
        options = bulk_request_schema.load(parse_json(raw))
    except ValidationError as exc:
        raise InvalidRequest(details=exc.messages) from None
    rows = options["contacts"]
    if not 1 <= len(rows) <= max_rows:
        raise BatchSize(f"Send between 1 and {max_rows} contacts per request.",
                        details={"min": 1, "max": max_rows, "received": len(rows)})
    atomic = always_atomic or options["atomic"]
    tenant_id = g.principal.tenant_id
    known = KNOWN_ADDRESSES.set(known_addresses(tenant_id, rows))
    try:
        valid, invalid = validate_rows(rows)
    finally:
        KNOWN_ADDRESSES.reset(known)

    def work(conn: psycopg.Connection, attempt: int) -> tuple[dict, int]:
        # The first attempt locks only what it writes; a retry, which means
        # contention, holds off the tenant's other batches so it cannot fail again.
        batch = plan_upsert(conn, tenant_id, valid, exclusive=attempt > 1)
        # All-or-nothing: matched first, so that the 400 lists conflicts as well
        # as invalid rows, and the transaction rolls back.
        if atomic and (invalid or batch.failed):
            raise ValidationFailed(details={"failures": all_failures(rows, invalid, batch.outcomes)})
        write_batch(conn, batch, options["run_workflow"])
        # After the write: a conflict with a contact this batch created names its new id.
        failures = all_failures(rows, invalid, batch.outcomes)
        data = summary(len(rows), batch.outcomes, failures, options["return_results"])
        note_counts(**{key: data[key] for key in COUNT_KEYS})
        return {"success": True, "data": data}, 200

    return run_write(work, idempotency)


def validate_rows(rows: list[Any]) -> tuple[list[tuple[int, dict]], list[dict]]:
    """Load every row; return (index, row) pairs that are valid and failures for the rest."""
    valid, invalid = [], []
    for index, raw in enumerate(rows):
        try:
            valid.append((index, load_row(raw)))
        except ValidationError as exc:
            invalid.append({**row_identity(index, raw), "code": "invalid_contact",
                            "message": "The contact is invalid.", "errors": exc.messages})
    return valid, invalid


def known_addresses(tenant_id: int, rows: list[Any]) -> frozenset[str]:
    """Which of the rows' emails the tenant's contacts already hold: one
    indexed look-up before validation (app/schemas.py, KNOWN_ADDRESSES)."""
    candidates = known_address_candidates(rows)
    if not candidates:
        return frozenset()
    with get_conn() as conn:
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
    conflicts = [conflict_failure(o, rows[o.index]) for o in outcomes if o.status == FAILED]
    return sorted(invalid + conflicts, key=lambda failure: failure["index"])


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
    conflict = outcome.conflict
    assert conflict is not None
    by_external_id, by_email = conflict.external_id_contact, conflict.email_contact
    return {
        **row_identity(outcome.index, raw),
        "code": "identity_conflict",
        "message": "The externalId and the email of this row belong to different contacts.",
        "conflict": {
            "externalIdContactId": by_external_id and by_external_id.id,
            "emailContactId": by_email and by_email.id,
            # A contact that an earlier row of this request creates has no id
            # until it is written (never, in all-or-nothing mode): name the row.
            "externalIdRowIndex": created_by_index(by_external_id),
            "emailRowIndex": created_by_index(by_email),
        },
    }


def created_by_index(contact: Contact | None) -> int | None:
    return contact.created_by_index if contact is not None else None


def summary(total: int, outcomes: list[RowOutcome], failures: list[dict],
            with_results: bool) -> dict[str, Any]:
    """The response's data: counts, failures, and per-row results on request."""
    counts = {status: 0 for status in (CREATED, UPDATED, UNCHANGED)}
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
        "failures": failures,
    }
    if with_results:
        data["results"] = row_results(total, outcomes)
    return data


def row_results(total: int, outcomes: list[RowOutcome]) -> list[dict[str, Any]]:
    """One entry per row in request order; rows that never reached the engine failed."""
    results: list[dict[str, Any]] = [{"index": i, "id": None, "status": FAILED} for i in range(total)]
    for outcome in outcomes:
        if outcome.status != FAILED and outcome.contact is not None:
            results[outcome.index] = {"index": outcome.index, "id": outcome.contact.id,
                                      "status": outcome.status}
    return results
