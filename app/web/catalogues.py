"""Catalogues blueprint: the tenant's tags, folders and companies (DESIGN 8).

| GET /tags, /folders, /companies ?after=&limit= | contacts:read  | a page in catalogue id order |
| POST /tags, /folders {"name": ...}             | contacts:write | 201 made, 200 it existed     |

Rows of the bulk doors name entries too (created when new); these routes
list them and make one ahead of use. Making an entry that exists, in any
case, answers it with 200: the request is safe to repeat.
"""

from typing import Any

from flask import Blueprint, current_app, g, request
from marshmallow import ValidationError

from app.auth import require_scope
from app.db import get_conn, run_in_transaction
from app.engine.catalogues import add_name, list_entries
from app.errors import InvalidRequest, ValidationFailed
from app.schemas.contacts import catalogue_page_query_schema, new_catalogue_entry_schema
from app.web.body import parse_json, read_body

bp = Blueprint("catalogues", __name__)


@bp.get("/tags")
@require_scope("contacts:read")
def list_tags():
    """A page of the tenant's tags."""
    return catalogue_page("tags")


@bp.post("/tags")
@require_scope("contacts:write")
def create_tag():
    """Make a tag (or answer the one of that name)."""
    return create_entry("tags")


@bp.get("/folders")
@require_scope("contacts:read")
def list_folders():
    """A page of the tenant's folders."""
    return catalogue_page("folders")


@bp.post("/folders")
@require_scope("contacts:write")
def create_folder():
    """Make a folder (or answer the one of that name)."""
    return create_entry("folders")


@bp.get("/companies")
@require_scope("contacts:read")
def list_companies():
    """A page of the tenant's companies, as contacts show them."""
    return catalogue_page("companies")


def catalogue_page(kind: str) -> dict[str, Any]:
    """One page of a catalogue, with where the next one starts."""
    try:
        query = catalogue_page_query_schema.load(request.args.to_dict())
    except ValidationError as exc:
        raise InvalidRequest(details=exc.messages) from None
    with get_conn() as conn:
        rows, has_more = list_entries(conn, g.principal.tenant_id, kind, after=query["after"],
                                      limit=query["limit"])
    entries = ([{"companyId": r["company_id"], "name": r["name"]} for r in rows] if kind == "companies"
               else [{"id": r["id"], "name": r["name"]} for r in rows])
    return {"success": True, "data": entries, "hasMore": has_more,
            "nextAfter": rows[-1]["id"] if has_more else None}


def create_entry(kind: str):
    """POST {"name": ...}: 201 with the new entry, or 200 with the existing one."""
    body = parse_json(read_body())
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be an object with a name.")
    try:
        name = new_catalogue_entry_schema.load(body)["name"]
    except ValidationError as exc:
        raise ValidationFailed("The name is invalid; nothing was made.",
                               details={"errors": exc.messages}) from None
    tenant_id = g.principal.tenant_id
    with get_conn() as conn:
        entry, created = run_in_transaction(
            conn, lambda conn, _attempt: add_name(conn, tenant_id, kind, name),
            attempts=current_app.config["TX_ATTEMPTS"])
    return {"success": True, "data": entry}, 201 if created else 200
