"""Contacts blueprint: the write doors, each parse -> engine (app/engine/bulk.py) -> response.

| door                          | rows   | invalid rows                   |
| POST /contacts/bulk-update    | 1-1000 | reported; valid rows written   |
|   with Prefer: respond-async  | 1-100,000 | 202: a batch task (DESIGN 10) reports them |
| POST /v1/contacts/bulk-update | 1-100  | reported (AutoSend-compatible) |
| POST /contacts/bulk           | 1-1000 | 400, nothing written (MailingCore-compatible) |
| POST /contacts                | 1      | 400 validation_failed, 409 identity_conflict |
"""

from collections.abc import Mapping
from typing import Any

import psycopg
from flask import Blueprint, Response, current_app, g, request
from marshmallow import ValidationError

from app.auth import require_scope
from app.engine.bulk import BatchRejected, BulkOptions, ContactConflict, bulk_upsert, upsert_one
from app.engine.tasks import NATIVE, find_task, submit_task, task_view
from app.engine.upsert import CREATED
from app.errors import BatchSize, IdentityConflict, InvalidRequest, ValidationFailed
from app.schemas.contacts import bulk_request_schema, contact_upsert_schema
from app.web.body import parse_json, read_body
from app.web.request_log import note_counts
from app.web.writes import dry_run_answer, idempotency_of_request, replay_if_answered, run_write

bp = Blueprint("contacts", __name__)

AUTOSEND_MAX_ROWS = 100
COUNT_KEYS = ("totalCount", "createdCount", "updatedCount", "unchangedCount", "staleCount", "failedCount")


@bp.post("/contacts/bulk-update")
@require_scope("contacts:write")
def bulk_update():
    """Native door: partial success, `atomic: true` for all-or-nothing; with
    `Prefer: respond-async`, a batch task."""
    if prefers_async():
        return submit_bulk_task()
    return bulk_door(max_rows=current_app.config["BULK_MAX"], always_atomic=False)


def prefers_async() -> bool:
    """Does the Prefer header (RFC 7240) ask for respond-async?"""
    preferences = ",".join(request.headers.getlist("Prefer"))
    return any(part.split(";")[0].split("=")[0].strip().lower() == "respond-async"
               for part in preferences.split(","))


def submit_bulk_task():
    """Store the rows as a batch task and answer 202 at once: only the body's
    shape and size are checked here; the worker validates the rows and
    reports the invalid ones in the task's results, as this door would."""
    config = current_app.config
    raw = read_body(max_bytes=config["TASK_MAX_BODY_BYTES"])
    idempotency = idempotency_of_request(raw, variant="respond-async")
    if idempotency is not None and (replay := replay_if_answered(idempotency)) is not None:
        return with_task_location(replay)
    try:
        envelope = bulk_request_schema.load(parse_json(raw))
    except ValidationError as exc:
        raise InvalidRequest(details=exc.messages) from None
    for option in ("atomic", "dry_run"):
        if envelope[option]:
            name = "dryRun" if option == "dry_run" else option
            raise InvalidRequest(f"{name} cannot be combined with Prefer: respond-async.",
                                 details={name: ["Synchronous requests only."]})
    rows, max_rows = envelope["contacts"], config["TASK_MAX_ROWS"]
    if not 1 <= len(rows) <= max_rows:
        raise BatchSize(f"Send between 1 and {max_rows} contacts per batch task.",
                        details={"min": 1, "max": max_rows, "received": len(rows)})
    tenant_id = g.principal.tenant_id

    def work(conn: psycopg.Connection, _attempt: int) -> tuple[dict, int]:
        task_id = submit_task(conn, tenant_id, NATIVE, rows, run_workflow=envelope["run_workflow"])
        task = find_task(conn, tenant_id, task_id)
        assert task is not None  # stored just now, in this transaction
        return {"success": True, "data": task_view(task)}, 202

    return with_task_location(run_write(work, idempotency))


def with_task_location(response: Response) -> Response:
    """A 202 (first answer or replay) names its task in Location."""
    if response.status_code == 202:
        response.headers["Location"] = f"/batch-tasks/{response.get_json()['data']['id']}"
        response.headers["Preference-Applied"] = "respond-async"
    return response


@bp.post("/v1/contacts/bulk-update")
@require_scope("contacts:write")
def autosend_bulk_update():
    """AutoSend's door: at most 100 rows, partial success."""
    return bulk_door(max_rows=autosend_max_rows(current_app.config), always_atomic=False)


def autosend_max_rows(config: Mapping[str, Any]) -> int:
    """AutoSend's door takes 100 rows, or fewer when CONTACTSYNC_BULK_MAX says so."""
    return min(AUTOSEND_MAX_ROWS, config["BULK_MAX"])


@bp.post("/contacts/bulk")
@require_scope("contacts:write")
def mailingcore_bulk():
    """MailingCore's door: any invalid or conflicting row rejects the batch."""
    return bulk_door(max_rows=current_app.config["BULK_MAX"], always_atomic=True)


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
    run_workflow, dry_run = row.pop("run_workflow"), row.pop("dry_run")
    tenant_id = g.principal.tenant_id

    def work(conn: psycopg.Connection, attempt: int) -> tuple[dict, int]:
        try:
            done = upsert_one(conn, tenant_id, row, run_workflow=run_workflow, dry_run=dry_run,
                              exclusive=attempt > 1)
        except ContactConflict as exc:
            raise IdentityConflict(details={"conflict": exc.conflict}) from None
        data = {"status": done.status, "changedFields": done.changed_fields, "contact": done.contact}
        if dry_run:
            data["dryRun"] = True
        return {"success": True, "data": data}, 201 if done.status == CREATED and not dry_run else 200

    if dry_run:
        return dry_run_answer(work, idempotency)
    return run_write(work, idempotency)


def bulk_door(max_rows: int, always_atomic: bool):
    """Check a bulk request's envelope, then run the engine's bulk path in one transaction."""
    raw = read_body()
    idempotency = idempotency_of_request(raw)
    if idempotency is not None and (replay := replay_if_answered(idempotency)) is not None:
        return replay
    try:
        envelope = bulk_request_schema.load(parse_json(raw))
    except ValidationError as exc:
        raise InvalidRequest(details=exc.messages) from None
    rows = envelope["contacts"]
    if not 1 <= len(rows) <= max_rows:
        raise BatchSize(f"Send between 1 and {max_rows} contacts per request.",
                        details={"min": 1, "max": max_rows, "received": len(rows)})
    options = BulkOptions(atomic=always_atomic or envelope["atomic"],
                          run_workflow=envelope["run_workflow"],
                          return_results=envelope["return_results"], dry_run=envelope["dry_run"])
    tenant_id = g.principal.tenant_id

    def work(conn: psycopg.Connection, attempt: int) -> tuple[dict, int]:
        try:
            # The first attempt locks only what it writes; a retry, which means
            # contention, holds off the tenant's other batches so it cannot fail again.
            report = bulk_upsert(conn, tenant_id, rows, options, exclusive=attempt > 1)
        except BatchRejected as exc:
            raise ValidationFailed(details={"failures": exc.failures}) from None
        note_counts(**{key: report.summary[key] for key in COUNT_KEYS})
        return {"success": True, "data": report.summary}, 200

    if options.dry_run:
        return dry_run_answer(work, idempotency)
    return run_write(work, idempotency)
