"""GET /openapi.json (OpenAPI 3.1, generated from app/schemas/contacts.py) and GET /docs (Swagger UI).

The document is built once per process, from the same marshmallow schemas
that validate requests. Swagger UI's files come from the flask-swagger-ui
package (Swagger UI 5, which renders OpenAPI 3.1), so /docs needs no CDN.
"""

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, current_app
from flask_swagger_ui import get_swaggerui_blueprint

from app.engine.tenants import SLUG_PATTERN
from app.schemas import contacts as schemas
from app.schemas import deletions as deletion_schemas
from app.schemas import inro as inro_schemas
from app.schemas import tasks as task_schemas
from app.web.contacts import autosend_max_rows

bp = Blueprint("openapi", __name__)

DOCS_URL = "/docs"
SPEC_URL = "/openapi.json"

ERROR_MEANINGS = {
    400: "invalid_json, invalid_request, batch_size, or validation_failed (all-or-nothing mode: "
         "details.failures lists every invalid or conflicting row; nothing was written).",
    401: "unauthorized: the bearer token is missing, malformed, unknown or revoked.",
    403: "insufficient_scope or tenant_mismatch.",
    404: "not_found.",
    410: "cursor_expired: deletions after this cursor were purged (CONTACTSYNC_TOMBSTONE_RETENTION_DAYS); "
         "start again with a recent updatedSince, or from the start of the feed.",
    409: "idempotency_key_in_progress: a request with this Idempotency-Key is still running.",
    422: "idempotency_key_reused: this Idempotency-Key answered another request.",
    413: "payload_too_large.",
    415: "unsupported_media_type: send application/json.",
    429: "rate_limited: this token spent its CONTACTSYNC_RATE_LIMIT budget; retry after "
         "Retry-After seconds. Every answer of a limited route carries RateLimit-Limit, "
         "RateLimit-Remaining and RateLimit-Reset (seconds until the window resets).",
    503: "database_unavailable: retry after Retry-After seconds.",
}
WRITE_ERRORS = (400, 401, 403, 409, 413, 415, 422, 429, 503)
READ_ERRORS = (401, 403, 429, 503)
IDEMPOTENCY_HEADER = {
    "in": "header", "name": "Idempotency-Key", "required": False,
    "schema": {"type": "string", "pattern": "^[ -~]{1,255}$"},
    "description": "Retry-safe writes: the same key with the same request replays the first "
                   "2xx answer (header Idempotent-Replayed: true) without applying it again."}
TENANT_HEADER = {"in": "header", "name": "X-Tenant-Id", "required": False,
                 "schema": {"type": "string", "pattern": SLUG_PATTERN},
                 "description": "Optional; when sent it must name the token's tenant."}


# The schemas the document names as components (#/components/schemas/ContactRow ...).
COMPONENT_SCHEMAS = (
    schemas.ContactRowSchema, schemas.CompanyChangeSchema, schemas.ContactUpsertSchema,
    schemas.BulkRequestSchema, schemas.CatalogueEntrySchema, schemas.CompanySchema,
    schemas.ContactSchema, schemas.TombstoneSchema, schemas.BulkResponseSchema, schemas.UpsertResponseSchema,
    schemas.ContactResponseSchema, schemas.ContactListResponseSchema, schemas.FeedPageResponseSchema,
    schemas.ErrorResponseSchema, schemas.StatusSchema, schemas.NewCatalogueEntrySchema,
    schemas.CatalogueEntryResponseSchema, schemas.CataloguePageResponseSchema,
    schemas.CompanyPageResponseSchema,
    task_schemas.BatchTaskSchema, task_schemas.BatchTaskResponseSchema,
    task_schemas.BatchTaskPageResponseSchema, task_schemas.RowOutcomePageResponseSchema,
    task_schemas.InroTaskSchema, task_schemas.InroTaskListSchema, task_schemas.InroQueuedSchema,
    inro_schemas.InroContactSchema, inro_schemas.InroEntrySchema, inro_schemas.InroBulkRequestSchema,
    deletion_schemas.DeleteEntrySchema, deletion_schemas.BulkDeleteRequestSchema,
    deletion_schemas.BulkDeleteResponseSchema,
)
PREFER_HEADER = {
    "in": "header", "name": "Prefer", "required": False, "schema": {"type": "string"},
    "description": "respond-async (RFC 7240): a batch task of up to CONTACTSYNC_TASK_MAX_ROWS rows "
                   "(100,000 by default; the body's maxItems is the synchronous limit); 202 with "
                   "the task and Location. Rows are validated by the worker."}
TASK_ID = {"in": "path", "name": "task_id", "required": True, "schema": {"type": "integer", "minimum": 0}}


def json_body(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error_responses(*statuses: int, **meanings: str) -> dict[int, Any]:
    """The error answers of an operation; `status_400="..."` words one for it."""
    return {status: json_body("ErrorResponse", meanings.get(f"status_{status}", ERROR_MEANINGS[status]))
            for status in statuses}


def bulk_operation(summary: str, description: str, max_rows: int) -> dict[str, Any]:
    """A bulk door: the BulkRequest body with this door's row limit."""
    body = {"allOf": [{"$ref": "#/components/schemas/BulkRequest"},
                      {"properties": {"contacts": {"minItems": 1, "maxItems": max_rows}}}]}
    return {"post": {
        "summary": summary, "description": description, "tags": ["contacts"],
        "parameters": [TENANT_HEADER, IDEMPOTENCY_HEADER], "x-required-scope": "contacts:write",
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {200: json_body("BulkResponse", "The request was valid; every row is reported."),
                      **error_responses(*WRITE_ERRORS)},
    }}


def catalogue_page_operation(summary: str, response: str) -> dict[str, Any]:
    """GET of a catalogue: a page in id order, `after` the previous page's nextAfter."""
    return {"summary": summary, "tags": ["catalogues"], "x-required-scope": "contacts:read",
            "parameters": [{"in": "query", "schema": schemas.CataloguePageQuerySchema}, TENANT_HEADER],
            "responses": {200: json_body(response, "A page in catalogue id order."),
                          **error_responses(400, *READ_ERRORS,
                                            status_400="invalid_request: a bad after or limit.")}}


def task_paths(spec: APISpec) -> None:
    """The batch tasks (DESIGN 10) and Inrō's door (DESIGN 11)."""
    page = {"in": "query", "schema": task_schemas.TaskPageQuerySchema}
    bad_page = "invalid_request (a bad limit) or invalid_cursor."
    spec.path("/batch-tasks", operations={"get": {
        "summary": "The tenant's batch tasks, newest first", "tags": ["batch tasks"],
        "x-required-scope": "jobs:read", "parameters": [page, TENANT_HEADER],
        "responses": {200: json_body("BatchTaskPageResponse", "A page of tasks."),
                      **error_responses(400, *READ_ERRORS, status_400=bad_page)}}})
    spec.path("/batch-tasks/{task_id}", operations={
        "get": {"summary": "One batch task and its progress", "tags": ["batch tasks"],
                "x-required-scope": "jobs:read", "parameters": [TASK_ID, TENANT_HEADER],
                "responses": {200: json_body("BatchTaskResponse", "The task."),
                              **error_responses(*READ_ERRORS, 404)}},
        "delete": {"summary": "Cancel a batch task", "tags": ["batch tasks"],
                   "description": "Chunks not yet applied are skipped; applied ones stay. A task "
                                  "that already ended is answered as it ended.",
                   "x-required-scope": "jobs:write", "parameters": [TASK_ID, TENANT_HEADER],
                   "responses": {200: json_body("BatchTaskResponse", "The task, cancelled."),
                                 **error_responses(*READ_ERRORS, 404)}}})
    spec.path("/batch-tasks/{task_id}/results", operations={"get": {
        "summary": "A batch task's row outcomes", "tags": ["batch tasks"],
        "description": "In row order, as far as the task has got. Accept application/x-ndjson "
                       "or text/csv streams every outcome so far.",
        "x-required-scope": "jobs:read", "parameters": [TASK_ID, page, TENANT_HEADER],
        "responses": {200: {"description": "A page of outcomes, or all of them streamed.", "content": {
            "application/json": {"schema": "RowOutcomePageResponse"},
            "application/x-ndjson": {"schema": {"type": "string"}},
            "text/csv": {"schema": {"type": "string"}}}},
            **error_responses(400, *READ_ERRORS, 404, status_400=bad_page)}}})
    spec.path("/api/v1/contacts/bulk", operations={"put": {
        "summary": "Update 1-1000 contacts by id, username or email (Inrō-compatible)",
        "tags": ["inro"], "x-required-scope": "contacts:write",
        "description": "Identifiers are resolved at once; the matched entries are applied in the "
                       "background as a batch task. Never creates a contact.",
        "parameters": [TENANT_HEADER, IDEMPOTENCY_HEADER],
        "requestBody": {"required": True, "content": {"application/json": {"schema": "InroBulkRequest"}}},
        "responses": {202: json_body("InroQueued", "Queued; not_found lists what matched nothing."),
                      **error_responses(*WRITE_ERRORS, status_400=(
                          "invalid_json, batch_size, or invalid_request (details.contacts: the "
                          "problems of every bad entry, by index); nothing was queued."))}}})
    spec.path("/api/v1/batch_tasks", operations={"get": {
        "summary": "The tenant's newest 100 batch tasks (Inrō-compatible)", "tags": ["inro"],
        "x-required-scope": "jobs:read", "parameters": [TENANT_HEADER],
        "responses": {200: json_body("InroTaskList", "Newest first."), **error_responses(*READ_ERRORS)}}})
    spec.path("/api/v1/batch_tasks/{task_id}", operations={"get": {
        "summary": "One batch task with progress and ETA (Inrō-compatible)", "tags": ["inro"],
        "x-required-scope": "jobs:read", "parameters": [TASK_ID, TENANT_HEADER],
        "responses": {200: json_body("InroTask", "The task."), **error_responses(*READ_ERRORS, 404)}}})


def deletion_paths(spec: APISpec) -> None:
    """Erasure (DESIGN 9): the contact, its links and events go; a tombstone enters the feed."""
    erased = ("Erased in one transaction: the contact, its tag, folder and company links, its "
              "webhook events and every stored answer that names it; its tombstone enters the "
              "change feed and a contact.deleted event is written for an enabled webhook.")
    contact_path = {"in": "path", "name": "contact_id", "required": True, "schema": {"type": "string"}}
    deleted = {"description": "Deleted.", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"success": {"type": "boolean"}, "message": {"type": "string"}}}}}}
    spec.path("/contacts/bulk-delete", operations={"post": {
        "summary": "Delete 1-1000 contacts by id, externalId, email or username", "tags": ["contacts"],
        "description": erased, "parameters": [TENANT_HEADER, IDEMPOTENCY_HEADER],
        "x-required-scope": "contacts:write",
        "requestBody": {"required": True, "content": {"application/json": {"schema": "BulkDeleteRequest"}}},
        "responses": {200: json_body("BulkDeleteResponse", "deletedCount, and the entries naming nobody."),
                      **error_responses(*WRITE_ERRORS, status_400=(
                          "invalid_json, batch_size, or invalid_request (details.contacts: the "
                          "problems of every bad entry, by index); nothing was deleted."))}}})
    spec.path("/v1/contacts/{contact_id}", operations={"delete": {
        "summary": "Delete a contact by id (AutoSend-compatible)", "tags": ["contacts"],
        "description": erased, "parameters": [contact_path, TENANT_HEADER, IDEMPOTENCY_HEADER],
        "x-required-scope": "contacts:write",
        "responses": {200: deleted, **error_responses(401, 403, 404, 409, 422, 429, 503)}}})
    spec.path("/v1/contacts/email/userId/{user_id}", operations={"delete": {
        "summary": "Delete a contact by userId, the externalId (AutoSend-compatible)", "tags": ["contacts"],
        "description": erased,
        "parameters": [{**contact_path, "name": "user_id"}, TENANT_HEADER, IDEMPOTENCY_HEADER],
        "x-required-scope": "contacts:write",
        "responses": {200: deleted, **error_responses(401, 403, 404, 409, 422, 429, 503)}}})


# Intercom's door (DESIGN 12), in Intercom's own shapes (its OpenAPI's
# bulk_*_contacts_request, contacts_bulk_job and error). Fields it does not
# list are ignored, so the request schemas allow any other property.
INTERCOM_VERSION_HEADER = {
    "in": "header", "name": "Intercom-Version", "required": False, "schema": {"type": "string"},
    "description": "Accepted whatever its value, or absent; nothing depends on it."}
STRING_OR_INTEGER = {"type": ["string", "integer"]}
INTERCOM_TAG_REFS = {"type": "array", "items": {
    "type": "object", "required": ["id"], "properties": {"id": {
        **STRING_OR_INTEGER,
        "description": "A tag id of the tenant (GET /tags); an unknown one is skipped."}}}}
INTERCOM_COMPANY = {"type": "object", "required": ["company_id"], "properties": {
    "company_id": {**STRING_OR_INTEGER, "description": "The client's companyId (1-255 characters)."},
    "name": {"type": ["string", "null"], "maxLength": 255},
    "remove": {"type": "boolean", "description": "Detach the company instead of attaching it."}}}
INTERCOM_CONTACT_FIELDS = {
    "external_id": {"type": "string", "minLength": 1, "maxLength": 255, "description": "externalId."},
    "user_id": {"type": "string", "minLength": 1, "maxLength": 255,
                "description": "Seed 002's name for external_id."},
    "email": {"type": "string", "maxLength": 254},
    "name": {"type": ["string", "null"], "maxLength": 255},
    "phone": {"type": ["string", "null"], "maxLength": 32},
    "avatar": {"description": "avatarUrl: an http(s) URL, or {image_url: URL}; null clears it.",
               "oneOf": [{"type": ["string", "null"], "maxLength": 2048},
                         {"type": "object", "required": ["image_url"],
                          "properties": {"image_url": {"type": ["string", "null"], "maxLength": 2048}}}]},
    "owner_id": {"type": ["string", "integer", "null"],
                 "description": "ownerId; an integer is taken as its decimal string."},
    "unsubscribed_from_emails": {"type": ["boolean", "null"], "description": "optIn, negated."},
    "language_override": {"type": ["string", "null"], "maxLength": 35, "description": "locale."},
    "custom_attributes": {"type": "object", "description": "attributes, merged key by key."},
    "companies": {"type": "array", "maxItems": 100, "items": INTERCOM_COMPANY},
    "company": {**INTERCOM_COMPANY, "description": "Seed 002: one company, as an entry of companies."},
    "tags": {"type": "object", "properties": {"add": INTERCOM_TAG_REFS, "remove": INTERCOM_TAG_REFS}},
}
INTERCOM_JOB_REF = {"type": "object", "required": ["id"], "description": "Append to this open job.",
                    "properties": {"id": {"type": "string", "example": "job_1"}}}
CONTACT_ID = {**STRING_OR_INTEGER, "description": "Our contact id (\"17\" or 17); an id that names no "
                                                  "contact fails its item and the job ends "
                                                  "completed_with_errors."}


def intercom_request(item: dict[str, Any], description: str) -> dict[str, Any]:
    return {"type": "object", "required": ["contacts"], "description": description, "properties": {
        "contacts": {"type": "array", "minItems": 1, "maxItems": 100, "items": item},
        "job": INTERCOM_JOB_REF}}


INTERCOM_TIME = {"type": "integer", "description": "Unix seconds."}
INTERCOM_OPTIONAL_TIME = {"type": ["integer", "null"], "description": "Unix seconds; null until then."}
INTERCOM_STATES = ["pending", "running", "completed", "completed_with_errors"]
INTERCOM_COMPONENTS = {
    "IntercomBulkUpdateRequest": intercom_request(
        {"type": "object", "required": ["id"], "properties": {"id": CONTACT_ID, **INTERCOM_CONTACT_FIELDS}},
        "Up to 100 updates by id."),
    "IntercomBulkCreateRequest": intercom_request(
        {"type": "object", "properties": {"id": CONTACT_ID, **INTERCOM_CONTACT_FIELDS}},
        "Up to 100 items: with an id, an update (seed 002); without, a strict create, which needs an "
        "external_id or an email and fails its item when a contact holds either."),
    "IntercomBulkDeleteRequest": intercom_request(
        {"type": "object", "required": ["id"], "properties": {"id": CONTACT_ID}},
        "Up to 100 contacts to erase, by id."),
    "IntercomJob": {"type": "object", "required": [
        "id", "type", "state", "created_at", "updated_at", "completed_at", "tasks", "url"], "properties": {
        "id": {"type": "string", "example": "job_1"},
        "type": {"type": "string", "enum": ["contacts.bulk.job"]},
        "state": {"type": "string", "enum": INTERCOM_STATES}, "created_at": INTERCOM_TIME,
        "updated_at": INTERCOM_TIME, "completed_at": INTERCOM_OPTIONAL_TIME,
        "tasks": {"type": "array", "items": {"type": "object", "required": [
            "id", "item_count", "state", "created_at", "started_at", "completed_at"], "properties": {
            "id": {"type": "string", "example": "task_1"}, "item_count": {"type": "integer"},
            "state": {"type": "string", "enum": INTERCOM_STATES}, "created_at": INTERCOM_TIME,
            "started_at": INTERCOM_OPTIONAL_TIME, "completed_at": INTERCOM_OPTIONAL_TIME}}},
        "url": {"type": "string", "format": "uri"}}},
    "IntercomErrorList": {"type": "object", "required": ["type", "request_id", "errors"], "properties": {
        "type": {"type": "string", "enum": ["error.list"]}, "request_id": {"type": "string"},
        "errors": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string"}, "message": {"type": "string"},
                "field": {"type": "string", "description": "The field at fault, as contacts[3].email."}}}}}},
}
INTERCOM_ERRORS = {
    400: "parameter_invalid: the body is not valid JSON.",
    401: "unauthorized (Access Token Invalid): the bearer token is missing, malformed, unknown or revoked.",
    403: "forbidden: the job is closed for new task updates, the token lacks the scope, or X-Tenant-Id "
         "names another tenant.",
    404: "job_not_found: no job of the tenant has this id.",
    409: "idempotency_key_in_progress.",
    413: "payload_too_large.",
    415: "unsupported_media_type: send application/json.",
    422: "field_not_found, type_mismatch or parameter_invalid, one entry per problem, each naming its "
         "field; or idempotency_key_reused. Nothing was queued.",
    429: "rate_limit_exceeded: retry after Retry-After seconds.",
    503: "service_unavailable: the database is unavailable; retry after Retry-After seconds.",
}


def intercom_errors(*statuses: int) -> dict[int, Any]:
    return {status: json_body("IntercomErrorList", INTERCOM_ERRORS[status]) for status in statuses}


def intercom_write(summary: str, description: str, body: str) -> dict[str, Any]:
    """A write of Intercom's door: 202 with the job."""
    return {"summary": summary, "description": description, "tags": ["intercom"],
            "x-required-scope": "contacts:write",
            "parameters": [INTERCOM_VERSION_HEADER, TENANT_HEADER, IDEMPOTENCY_HEADER],
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {202: json_body("IntercomJob", "Queued as one task of the job."),
                          **intercom_errors(400, 401, 403, 404, 409, 413, 415, 422, 429, 503)}}


def intercom_paths(spec: APISpec) -> None:
    """Intercom's door (DESIGN 12) under /intercom."""
    for name, component in INTERCOM_COMPONENTS.items():
        spec.components.schema(name, component=component)
    spec.path("/intercom/contacts/bulk", operations={
        "put": intercom_write("Update up to 100 contacts by id (Intercom-compatible)",
                              "Applied in the background as one task of a new job, or of the open job "
                              "named by job.id.", "IntercomBulkUpdateRequest"),
        "post": intercom_write("Create, or update by id, up to 100 contacts (Intercom-compatible)",
                               "Items without an id are strict creates; items with one update.",
                               "IntercomBulkCreateRequest")})
    spec.path("/intercom/contacts/bulk/delete", operations={"post": intercom_write(
        "Delete up to 100 contacts by id (Intercom-compatible)",
        "Each contact is erased when the task applies (DESIGN 9: its links, events and stored "
        "answers go, a tombstone enters the feed, contact.deleted is sent to an enabled webhook). "
        "An id that names no contact fails its item; the job ends completed_with_errors.",
        "IntercomBulkDeleteRequest")})
    spec.path("/intercom/contacts/bulk/{job_id}", operations={"get": {
        "summary": "A bulk job and its tasks (Intercom-compatible)", "tags": ["intercom"],
        "x-required-scope": "jobs:read",
        "parameters": [{"in": "path", "name": "job_id", "required": True, "schema": {"type": "string"}},
                       INTERCOM_VERSION_HEADER, TENANT_HEADER],
        "responses": {200: json_body("IntercomJob", "The job."),
                      **intercom_errors(401, 403, 404, 429, 503)}}})


def build_spec(bulk_max: int, autosend_max: int) -> dict[str, Any]:
    """The whole document, as a dict, with this configuration's row limits."""
    marshmallow = MarshmallowPlugin()
    spec = APISpec(
        title="contactsync", version="0.1.0", openapi_version="3.1.0", plugins=[marshmallow],
        info={"description": "Bulk upsert, look-ups and a change feed of contacts, per tenant."},
        security=[{"bearerAuth": []}],
    )
    marshmallow.map_to_openapi_type(schemas.StrictBoolean, "boolean", None)
    marshmallow.map_to_openapi_type(schemas.Attributes, "object", None)
    spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer",
                                                   "description": "cs_... token of one tenant."})
    for schema in COMPONENT_SCHEMAS:
        spec.components.schema(schema.__name__.removesuffix("Schema"), schema=schema)

    native_bulk = bulk_operation(
        f"Upsert 1-{bulk_max} contacts", "Invalid rows are reported and the valid ones written; "
                                        '`"atomic": true` writes all or nothing. With Prefer: '
                                        "respond-async, a batch task of up to "
                                        "CONTACTSYNC_TASK_MAX_ROWS rows.", bulk_max)
    native_bulk["post"]["parameters"].append(PREFER_HEADER)
    native_bulk["post"]["responses"][202] = json_body(
        "BatchTaskResponse", "Prefer: respond-async: the task, stored; Location names it.")
    spec.path("/contacts/bulk-update", operations=native_bulk)
    spec.path("/v1/contacts/bulk-update", operations=bulk_operation(
        f"Upsert 1-{autosend_max} contacts (AutoSend-compatible)",
        "userId and customFields are aliases.", autosend_max))
    spec.path("/contacts/bulk", operations=bulk_operation(
        f"Upsert 1-{bulk_max} contacts, all or nothing (MailingCore-compatible)",
        "Any invalid or conflicting row: 400 validation_failed, nothing written.", bulk_max))
    spec.path("/contacts", operations={
        "post": {
            "summary": "Upsert one contact", "tags": ["contacts"],
            "parameters": [TENANT_HEADER, IDEMPOTENCY_HEADER],
            "x-required-scope": "contacts:write",
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": "ContactUpsert"}}},
            "responses": {201: json_body("UpsertResponse", "Created."),
                          200: json_body("UpsertResponse", "Updated or unchanged."),
                          **error_responses(*WRITE_ERRORS, status_400=(
                              "invalid_json, invalid_request (not an object), or validation_failed "
                              "(details.errors: every field error); nothing was written."),
                              status_409=("identity_conflict: the externalId and the email belong "
                                          "to different contacts; or idempotency_key_in_progress."))},
        },
        "get": {
            "summary": "Look a contact up, or read the change feed", "tags": ["contacts"],
            "description": "With email, externalId or username: 0 or 1 contact. Otherwise a page of the "
                           "feed: follow nextCursor until hasMore is false, and resume from the "
                           "last nextCursor later; no change is ever skipped. A deleted contact "
                           "appears as its tombstone: {id, externalId, deleted: true, deletedAt}.",
            "x-required-scope": "contacts:read",
            "parameters": [{"in": "query", "schema": schemas.ContactsQuerySchema}, TENANT_HEADER],
            "responses": {200: {"description": "A look-up's list, or a page of the feed.",
                                "content": {"application/json": {"schema": {"oneOf": [
                                    {"$ref": "#/components/schemas/ContactListResponse"},
                                    {"$ref": "#/components/schemas/FeedPageResponse"}]}}}},
                          **error_responses(400, *READ_ERRORS, 410, status_400=(
                              "validation_failed (an invalid email or externalId to look up), "
                              "invalid_cursor, or invalid_request (unknown, repeated or mixed "
                              "parameters, a bad updatedSince or limit)."))},
        },
    })
    contact_id = {"in": "path", "name": "contact_id", "required": True,
                  "schema": {"type": "integer", "minimum": 0}}
    spec.path("/contacts/{contact_id}", operations={
        "get": {
            "summary": "One contact by id", "tags": ["contacts"], "x-required-scope": "contacts:read",
            "parameters": [contact_id, TENANT_HEADER],
            "responses": {200: json_body("ContactResponse", "The contact."),
                          **error_responses(*READ_ERRORS, 404)},
        },
        "delete": {
            "summary": "Delete (erase) one contact", "tags": ["contacts"],
            "x-required-scope": "contacts:write",
            "parameters": [contact_id, TENANT_HEADER, IDEMPOTENCY_HEADER],
            "description": "The contact, its links and webhook events go in one transaction; its "
                           "tombstone enters the change feed.",
            "responses": {204: {"description": "Deleted."},
                          **error_responses(401, 403, 404, 409, 422, 429, 503)},
        },
    })
    deletion_paths(spec)
    for kind, singular in (("tags", "tag"), ("folders", "folder")):
        spec.path(f"/{kind}", operations={
            "get": catalogue_page_operation(f"The tenant's {kind}", "CataloguePageResponse"),
            "post": {
                "summary": f"Make a {singular} (or answer the one of that name)", "tags": ["catalogues"],
                "parameters": [TENANT_HEADER], "x-required-scope": "contacts:write",
                "requestBody": {"required": True,
                                "content": {"application/json": {"schema": "NewCatalogueEntry"}}},
                "responses": {201: json_body("CatalogueEntryResponse", "Made."),
                              200: json_body("CatalogueEntryResponse",
                                             "It existed (names compare case-insensitively)."),
                              **error_responses(400, 401, 403, 413, 415, 429, 503, status_400=(
                                  "invalid_json, invalid_request, or validation_failed "
                                  "(details.errors: the name's problems)."))},
            }})
    spec.path("/companies", operations={
        "get": catalogue_page_operation("The tenant's companies", "CompanyPageResponse")})
    task_paths(spec)
    intercom_paths(spec)
    public = {"security": [], "tags": ["service"]}
    spec.path("/health", operations={"get": {
        **public, "summary": "The process is up",
        "responses": {200: json_body("Status", "Up.")}}})
    spec.path("/ready", operations={"get": {
        **public, "summary": "The database answers",
        "responses": {200: json_body("Status", "Ready."), **error_responses(503)}}})
    spec.path(SPEC_URL, operations={"get": {
        **public, "summary": "This document",
        "responses": {200: {"description": "OpenAPI 3.1.",
                            "content": {"application/json": {"schema": {"type": "object"}}}}}}})
    spec.path(DOCS_URL, operations={"get": {
        **public, "summary": "This document, rendered (Swagger UI)",
        "responses": {200: {"description": "An HTML page.",
                            "content": {"text/html": {"schema": {"type": "string"}}}}}}})
    return spec.to_dict()


@bp.get(SPEC_URL)
def openapi_document():
    """The OpenAPI document of this service."""
    return current_app.extensions["contactsync.openapi"]


def init_app(app: Flask) -> None:
    """Build the document now (a broken schema fails at start-up) and serve it and /docs."""
    app.extensions["contactsync.openapi"] = build_spec(app.config["BULK_MAX"],
                                                       autosend_max_rows(app.config))
    app.register_blueprint(bp)
    # validatorUrl None: Swagger UI would otherwise send the document's URL to swagger.io.
    docs = get_swaggerui_blueprint(DOCS_URL, SPEC_URL,
                                   config={"app_name": "contactsync API", "validatorUrl": None})
    app.register_blueprint(docs)
    # The blueprint answers /docs/ and its assets under /docs/...; /docs itself too, not a redirect.
    app.add_url_rule(DOCS_URL, "docs", app.view_functions[f"{docs.name}.show"])
