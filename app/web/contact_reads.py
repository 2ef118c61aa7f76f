"""Contact reads blueprint: one contact by id, look-ups by email, externalId or username,
and the change feed. All need `contacts:read`; the tenant comes from the token.

| GET /contacts/{id}                                 | the contact, or 404            |
| GET /contacts?email= / ?externalId= / ?username=   | `data`: a list of 0 or 1       |
| GET /contacts?updatedSince=...&limit=...&cursor=... | a page of the change feed, with tombstones |
"""

from typing import Any

from flask import Blueprint, g, request
from marshmallow import ValidationError

from app.auth import require_scope
from app.db import get_conn
from app.engine.reads import FeedPosition, MalformedCursor, TombstonesPurged, find_contact, read_changes
from app.errors import CursorExpired, InvalidCursor, InvalidRequest, NotFound, ValidationFailed
from app.schemas.contacts import LOOKUP_PARAMETERS, contacts_query_schema

bp = Blueprint("contact_reads", __name__)


@bp.get("/contacts/<int:contact_id>")
@require_scope("contacts:read")
def get_contact(contact_id: int):
    """The caller's contact with this id; another tenant's id is not found either."""
    with get_conn() as conn:
        contact = find_contact(conn, g.principal.tenant_id, contact_id=contact_id)
    if contact is None:
        raise NotFound("No contact has this id.")
    return {"success": True, "data": contact}


@bp.get("/contacts")
@require_scope("contacts:read")
def list_contacts():
    """A look-up by email, externalId or username, else a page of the change feed."""
    query = load_query()
    tenant_id = g.principal.tenant_id
    if query.keys() & {"email", "external_id", "username"}:
        with get_conn() as conn:
            contact = find_contact(conn, tenant_id, email=query.get("email"),
                                   external_id=query.get("external_id"), username=query.get("username"))
        return {"success": True, "data": [] if contact is None else [contact]}
    position = feed_position(query)
    try:
        with get_conn() as conn:
            page = read_changes(conn, tenant_id, position, query["limit"])
    except TombstonesPurged:
        raise CursorExpired() from None
    return {"success": True, "data": page.contacts, "nextCursor": page.next_position.encode(),
            "hasMore": page.has_more}


def load_query() -> dict[str, Any]:
    """The query string, validated: a bad look-up value is `validation_failed`
    (as a bad row would be), anything else wrong is `invalid_request`."""
    repeated = sorted(name for name in request.args if len(request.args.getlist(name)) > 1)
    if repeated:
        raise InvalidRequest(details={name: ["Send this parameter once."] for name in repeated})
    try:
        return contacts_query_schema.load(request.args.to_dict())
    except ValidationError as exc:
        if set(exc.messages) <= set(LOOKUP_PARAMETERS):
            raise ValidationFailed("The look-up value is invalid.",
                                   details={"errors": exc.messages}) from None
        raise InvalidRequest(details=exc.messages) from None


def feed_position(query: dict[str, Any]) -> FeedPosition:
    """Where this page starts: the cursor's position, else the start of the feed."""
    try:
        return FeedPosition.of_query(query)
    except MalformedCursor:
        raise InvalidCursor() from None
