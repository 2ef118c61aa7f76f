"""Deleting contacts (DESIGN 9): erasure, each door one transaction in app/engine/erasure.py.

| DELETE /contacts/{id}                   | contacts:write | 204, or 404                          |
| POST /contacts/bulk-delete              | contacts:write | 1-1000 entries; deletedCount, notFound |
| DELETE /v1/contacts/{id}                | contacts:write | AutoSend's: 200 {success, message}   |
| DELETE /v1/contacts/email/userId/{userId} | contacts:write | AutoSend's, by externalId          |

Every door takes an Idempotency-Key and is retried on races like the upsert doors.
"""

from typing import Any

import psycopg
from flask import Blueprint, g
from marshmallow import ValidationError

from app.auth import require_scope
from app.engine.erasure import delete_contacts
from app.errors import BatchSize, InvalidRequest, NotFound
from app.schemas.deletions import MAX_ENTRIES, MAX_ID, bulk_delete_request_schema, load_entries
from app.web.body import parse_json, read_body
from app.web.writes import idempotency_of_request, replay_if_answered, run_write

bp = Blueprint("deletions", __name__)

AUTOSEND_DELETED = {"success": True, "message": "Contact deleted successfully"}


@bp.delete("/contacts/<int:contact_id>")
@require_scope("contacts:write")
def delete_contact(contact_id: int):
    """204 once the contact is erased; 404 when the tenant has no such contact."""
    if contact_id > MAX_ID:  # no bigint id is this large: asking PostgreSQL would be a 500
        raise NotFound("No contact has this id.")
    return delete_one({"id": contact_id}, answer=None, status=204)


@bp.delete("/v1/contacts/<contact_id>")
@require_scope("contacts:write")
def autosend_delete_contact(contact_id: str):
    """AutoSend's delete by id: an id that is not one of ours names nobody."""
    if not contact_id.isascii() or not contact_id.isdigit() or not 1 <= int(contact_id) <= MAX_ID:
        raise NotFound("No contact has this id.")
    return delete_one({"id": int(contact_id)}, answer=AUTOSEND_DELETED, status=200)


@bp.delete("/v1/contacts/email/userId/<path:user_id>")
@require_scope("contacts:write")
def autosend_delete_by_user_id(user_id: str):
    """AutoSend's delete by userId, our externalId (trimmed, as stored)."""
    external_id = user_id.strip()
    if not 1 <= len(external_id) <= 255:
        raise NotFound("No contact has this userId.")
    return delete_one({"external_id": external_id}, answer=AUTOSEND_DELETED, status=200)


def delete_one(entry: dict[str, Any], answer: dict | None, status: int):
    """Erase the one contact `entry` names; 404 (nothing written) when none."""
    idempotency = idempotency_of_request(b"")
    if idempotency is not None and (replay := replay_if_answered(idempotency)) is not None:
        return replay
    tenant_id = g.principal.tenant_id

    def work(conn: psycopg.Connection, _attempt: int) -> tuple[dict | None, int]:
        if not delete_contacts(conn, tenant_id, [entry]).deleted_ids:
            raise NotFound("No contact has this id." if "id" in entry else "No contact has this userId.")
        return answer, status

    return run_write(work, idempotency)


@bp.post("/contacts/bulk-delete")
@require_scope("contacts:write")
def bulk_delete():
    """Check every entry (400 naming each bad one, nothing deleted), then erase in one transaction."""
    raw = read_body()
    idempotency = idempotency_of_request(raw)
    if idempotency is not None and (replay := replay_if_answered(idempotency)) is not None:
        return replay
    try:
        sent = bulk_delete_request_schema.load(parse_json(raw))["contacts"]
    except ValidationError as exc:
        raise InvalidRequest(details=exc.messages) from None
    if not 1 <= len(sent) <= MAX_ENTRIES:
        raise BatchSize(f"Send between 1 and {MAX_ENTRIES} contacts per request.",
                        details={"min": 1, "max": MAX_ENTRIES, "received": len(sent)})
    entries, problems = load_entries(sent)
    if problems:
        raise InvalidRequest("Some entries are not of the documented shape; nothing was deleted.",
                             details={"contacts": problems})
    tenant_id = g.principal.tenant_id

    def work(conn: psycopg.Connection, _attempt: int) -> tuple[dict, int]:
        deletion = delete_contacts(conn, tenant_id, entries, sent)
        return {"success": True, "data": {"deletedCount": len(deletion.deleted_ids),
                                          "notFoundCount": len(deletion.not_found),
                                          "notFound": deletion.not_found}}, 200

    return run_write(work, idempotency)
