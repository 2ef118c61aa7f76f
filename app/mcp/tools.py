"""The MCP tools (DESIGN 13): each one checks its scope, validates its input
with the same marshmallow schemas as the HTTP doors, and calls the engine
those doors call. A failure is a tool error carrying the error code and
message the HTTP answer would carry.

Each tool's input schema comes from its signature (pydantic), so an agent
reads descriptions, enums and limits; marshmallow stays the judge of what a
row or an entry may hold, as it is for every door.
"""

import json
import logging
from collections.abc import Callable
from typing import Annotated, Any, Literal

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask, current_app
from marshmallow import ValidationError
from mcp.server import MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from app.auth import Principal
from app.db import get_conn, run_in_transaction, run_read_only
from app.engine.bulk import BatchRejected, BulkOptions, bulk_upsert
from app.engine.reads import FeedPosition, MalformedCursor, TombstonesPurged, find_contact, read_changes
from app.engine.tasks import find_task, list_tasks
from app.engine.updates import inro_task_view, queue_updates
from app.errors import (
    ApiError,
    BatchSize,
    CursorExpired,
    InsufficientScope,
    InvalidCursor,
    InvalidRequest,
    NotFound,
    ValidationFailed,
)
from app.schemas import contacts as contact_schemas
from app.schemas.contacts import STATUSES, bulk_request_schema, contacts_query_schema
from app.schemas.inro import MAX_ENTRIES, load_entries

log = logging.getLogger(__name__)

MAX_LISTED_TASKS = 100
Status = Literal["auto", "optout", "spam"]
assert set(Status.__args__) == set(STATUSES)  # one list of statuses: the schema's

READ_ONLY = ToolAnnotations(readOnlyHint=True, destructiveHint=False, openWorldHint=False)
# Writes overwrite the fields they send, so an agent host should ask before running them.
WRITES = ToolAnnotations(readOnlyHint=False, destructiveHint=True, openWorldHint=False)


class ContactUpdates(BaseModel):
    """The fields an entry changes; a field left out is not touched, null clears it."""

    model_config = ConfigDict(extra="forbid")

    status: Status | None = Field(None, description="auto lets the status be derived again; optout or spam.")
    email: str | None = Field(None, max_length=254, description="The contact's new email address.")
    phone: str | None = Field(None, max_length=32, description="Digits, spaces and + - ( ) ., or null.")
    language: str | None = Field(None, max_length=35, description="A BCP 47 tag such as en or pt-BR.")
    folder_ids: list[int] | None = Field(None, max_length=100, description=(
        "The contact's folders become exactly these folder ids (an unknown id fails the entry)."))
    custom_properties: dict[str, str | int | float | bool | None] | None = Field(None, description=(
        "Custom properties, merged key by key; a key set to null is removed."))
    name: str | None = Field(None, max_length=255, description="The display name, or null.")


class UpdateEntry(BaseModel):
    """One contact, named by exactly one of id, username or email, and its updates."""

    model_config = ConfigDict(extra="forbid")

    id: int | None = Field(None, ge=1, description="The contact's id.")
    username: str | None = Field(None, max_length=255, description="The username (case-insensitive).")
    email: str | None = Field(None, max_length=254, description="The contact's email (case-insensitive).")
    updates: ContactUpdates


def contact_row_schema() -> dict[str, Any]:
    """The JSON schema of a native row, from the marshmallow schema that
    validates it (as /openapi.json shows it), with nested schemas inlined."""
    plugin = MarshmallowPlugin()
    spec = APISpec(title="rows", version="1", openapi_version="3.1.0", plugins=[plugin])
    plugin.map_to_openapi_type(contact_schemas.StrictBoolean, "boolean", None)
    plugin.map_to_openapi_type(contact_schemas.Attributes, "object", None)
    spec.components.schema("CompanyChange", schema=contact_schemas.CompanyChangeSchema)
    spec.components.schema("ContactRow", schema=contact_schemas.ContactRowSchema)
    components = spec.to_dict()["components"]["schemas"]

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(components[node["$ref"].rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items()}
        return [inline(item) for item in node] if isinstance(node, list) else node

    return inline(components["ContactRow"])


def tool_error(error: ApiError) -> CallToolResult:
    """A tool error with the code, message and details the HTTP answer carries."""
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details is not None:
        body["details"] = error.details
    return CallToolResult(content=[TextContent(type="text", text=json.dumps({"error": body}))],
                          is_error=True)


class ContactTools:
    """The tools of one MCP server: its Flask app (config and pool) and how it
    learns who calls (a bearer token over HTTP, CONTACTSYNC_TOKEN on stdio)."""

    def __init__(self, app: Flask, caller: Callable[[], Principal]) -> None:
        self.app = app
        self.caller = caller

    def run(self, scope: str, work: Callable[[int], Any]) -> Any:
        """Check the caller's scope, then `work(tenant_id)`; any failure is a tool error."""
        with self.app.app_context():
            try:
                principal = self.caller()
                if scope not in principal.scopes:
                    raise InsufficientScope(f"This token lacks the {scope} scope.",
                                            details={"requiredScope": scope})
                return work(principal.tenant_id)
            except ApiError as exc:
                return tool_error(exc)
            except Exception:
                log.exception("MCP tool failed")
                return tool_error(ApiError())

    def register(self, server: MCPServer) -> None:
        """Add every tool to `server`."""
        row_schema = contact_row_schema()

        @server.tool(annotations=WRITES)
        def bulk_update_contacts(
            contacts: Annotated[list[UpdateEntry], Field(min_length=1, max_length=MAX_ENTRIES, description=(
                "1-1000 entries. Updates only: never creates a contact."))],
        ) -> dict[str, Any]:
            """Update many contacts in the background, as Inrō's PUT /api/v1/contacts/bulk:
            identifiers are resolved now (not_found lists what matched nothing), the
            matched entries become a batch task; follow it with get_batch_task."""
            return self.run("contacts:write", lambda tenant_id: self.queue_updates(tenant_id, contacts))

        @server.tool(annotations=READ_ONLY)
        def list_batch_tasks(
            limit: Annotated[int, Field(ge=1, le=MAX_LISTED_TASKS, description="How many, newest first.")]
            = 20,
        ) -> dict[str, Any]:
            """The tenant's batch tasks, newest first, with progress."""
            def work(tenant_id: int) -> dict[str, Any]:
                with get_conn() as conn:
                    tasks, _ = list_tasks(conn, tenant_id, before_id=None, limit=limit)
                return {"batch_tasks": [inro_task_view(task) for task in tasks]}
            return self.run("jobs:read", work)

        @server.tool(annotations=READ_ONLY)
        def get_batch_task(
            task_id: Annotated[str, Field(max_length=20, description="The batch_task_id of a bulk update.")],
        ) -> dict[str, Any]:
            """One batch task: status, progress_percentage, estimated_completion_time, counts."""
            def work(tenant_id: int) -> dict[str, Any]:
                task = None
                if task_id.isascii() and task_id.isdigit():
                    with get_conn() as conn:
                        task = find_task(conn, tenant_id, int(task_id))
                if task is None:
                    raise NotFound("No batch task has this id.")
                return inro_task_view(task)
            return self.run("jobs:read", work)

        @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True,
                                                 idempotentHint=True, openWorldHint=False))
        def upsert_contacts(
            contacts: Annotated[list[dict[str, Any]], Field(
                min_length=1, max_length=MAX_ENTRIES, json_schema_extra={"items": row_schema},
                description="1-1000 rows, as POST /contacts/bulk-update takes them: each matched by "
                            "externalId, then email, then username; created when none matches.")],
            run_workflow: Annotated[bool, Field(description="Fire the webhook for changes.")] = False,
            atomic: Annotated[bool, Field(description="Any failed row: nothing is written.")] = False,
            return_results: Annotated[bool, Field(description="One result per row (id, status).")] = False,
            dry_run: Annotated[bool, Field(description="Answer what would happen; write nothing.")] = False,
        ) -> dict[str, Any]:
            """Create or update up to 1000 contacts now, as POST /contacts/bulk-update; the
            answer counts created, updated, unchanged, stale and failed rows and names every failure."""
            envelope = {"contacts": contacts, "runWorkflow": run_workflow, "atomic": atomic,
                        "returnResults": return_results, "dryRun": dry_run}
            return self.run("contacts:write", lambda tenant_id: self.upsert(tenant_id, envelope))

        @server.tool(annotations=READ_ONLY)
        def find_contact(
            id: Annotated[int | None, Field(ge=1, description="The contact's id.")] = None,
            email: Annotated[str | None, Field(max_length=254, description="Case-insensitive.")] = None,
            externalId: Annotated[str | None, Field(max_length=255, description="The client's key.")] = None,  # noqa: N803
            username: Annotated[str | None, Field(max_length=255, description="Case-insensitive.")] = None,
        ) -> dict[str, Any]:
            """One contact by exactly one of id, email, externalId or username: {"contact": ...},
            null when there is none."""
            sent = {name: value for name, value in
                    (("id", id), ("email", email), ("externalId", externalId), ("username", username))
                    if value is not None}
            return self.run("contacts:read", lambda tenant_id: self.find(tenant_id, sent))

        @server.tool(annotations=READ_ONLY)
        def list_contact_changes(
            cursor: Annotated[str | None, Field(max_length=512, description=(
                "nextCursor of the previous page; omit to start."))] = None,
            updated_since: Annotated[str | None, Field(description=(
                "Where to start (ISO 8601 with a zone), without a cursor; omit for the whole feed."))] = None,
            limit: Annotated[int, Field(ge=1, le=1000, description="Contacts per page.")] = 100,
        ) -> dict[str, Any]:
            """A page of the change feed: contacts (and tombstones of deleted ones) in the
            order they changed. Follow nextCursor while hasMore; keep the last one to resume."""
            query = {"limit": str(limit), **({"cursor": cursor} if cursor is not None else {}),
                     **({"updatedSince": updated_since} if updated_since is not None else {})}
            return self.run("contacts:read", lambda tenant_id: self.changes(tenant_id, query))

    def queue_updates(self, tenant_id: int, contacts: list[UpdateEntry]) -> dict[str, Any]:
        """Inrō's bulk update: its entries (updates in place of contact), its answer."""
        sent = []
        for entry in contacts:
            raw = entry.model_dump(exclude_unset=True)
            raw["contact"] = raw.pop("updates")
            sent.append(raw)
        entries, problems = load_entries(sent)
        if problems:
            raise InvalidRequest("Some entries are not of the documented shape; nothing was queued.",
                                 details={"contacts": problems})
        with get_conn() as conn:
            return run_in_transaction(
                conn, lambda c, _attempt: queue_updates(c, tenant_id, entries, sent).answer(),
                attempts=current_app.config["TX_ATTEMPTS"])

    def upsert(self, tenant_id: int, envelope: dict[str, Any]) -> dict[str, Any]:
        """The native bulk door's work and answer (its `data`)."""
        try:
            loaded = bulk_request_schema.load(envelope)
        except ValidationError as exc:
            raise InvalidRequest(details=exc.messages) from None
        rows, max_rows = loaded["contacts"], current_app.config["BULK_MAX"]
        if len(rows) > max_rows:
            raise BatchSize(f"Send between 1 and {max_rows} contacts per request.",
                            details={"min": 1, "max": max_rows, "received": len(rows)})
        options = BulkOptions(atomic=loaded["atomic"], run_workflow=loaded["run_workflow"],
                              return_results=loaded["return_results"], dry_run=loaded["dry_run"])

        def work(conn: Any, attempt: int) -> dict[str, Any]:
            try:
                return bulk_upsert(conn, tenant_id, rows, options, exclusive=attempt > 1).summary
            except BatchRejected as exc:
                raise ValidationFailed(details={"failures": exc.failures}) from None

        with get_conn() as conn:
            if options.dry_run:
                return run_read_only(conn, lambda c: work(c, 1))
            return run_in_transaction(conn, work, attempts=current_app.config["TX_ATTEMPTS"])

    def find(self, tenant_id: int, sent: dict[str, Any]) -> dict[str, Any]:
        """A look-up by one identifier, normalised as GET /contacts normalises it."""
        if len(sent) != 1:
            raise InvalidRequest("Send exactly one of id, email, externalId or username.")
        if "id" in sent:
            with get_conn() as conn:
                return {"contact": find_contact(conn, tenant_id, contact_id=sent["id"])}
        try:
            query = contacts_query_schema.load(sent)
        except ValidationError as exc:
            raise ValidationFailed("The look-up value is invalid.",
                                   details={"errors": exc.messages}) from None
        with get_conn() as conn:
            return {"contact": find_contact(conn, tenant_id, email=query.get("email"),
                                            external_id=query.get("external_id"),
                                            username=query.get("username"))}

    def changes(self, tenant_id: int, sent: dict[str, str]) -> dict[str, Any]:
        """A page of the feed, with the checks and errors of GET /contacts."""
        try:
            query = contacts_query_schema.load(sent)
        except ValidationError as exc:
            raise InvalidRequest(details=exc.messages) from None
        try:
            position = FeedPosition.of_query(query)
        except MalformedCursor:
            raise InvalidCursor() from None
        try:
            with get_conn() as conn:
                page = read_changes(conn, tenant_id, position, query["limit"])
        except TombstonesPurged:
            raise CursorExpired() from None
        return {"contacts": page.contacts, "nextCursor": page.next_position.encode(),
                "hasMore": page.has_more}
