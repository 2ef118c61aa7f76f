"""The error envelopes: every 4xx/5xx answer is built here.

`{"success": false, "error": {"code": ..., "message": ..., "details": ...}}`
Each class only sets a status and a stable snake_case code; messages are for
people and may change, codes may not.

Intercom's door (under /intercom, DESIGN 12) answers the same errors in
Intercom's own envelope instead, `{"type": "error.list", "request_id",
"errors": [{"code", "message", "field"?}]}`, with Intercom's codes where it
has one for the error (INTERCOM_CODES), so its clients read them unchanged.
"""

import logging
import uuid
from typing import Any

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer that is not a success, with a stable code."""

    status = 500
    code = "internal_error"
    message = "Something went wrong on our side. The error was logged."

    def __init__(self, message: str | None = None, details: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details
        self.headers = headers or {}


class InvalidJson(ApiError):
    status, code = 400, "invalid_json"
    message = "The request body is not valid UTF-8 JSON."


class InvalidRequest(ApiError):
    status, code = 400, "invalid_request"
    message = "The request is not of the documented shape."


class BatchSize(ApiError):
    status, code = 400, "batch_size"


class ValidationFailed(ApiError):
    status, code = 400, "validation_failed"
    message = "Some contacts are invalid or conflict; nothing was written."


class InvalidCursor(ApiError):
    status, code = 400, "invalid_cursor"
    message = "The cursor is not one this service handed out; start again from updatedSince."


class CursorExpired(ApiError):
    status, code = 410, "cursor_expired"
    message = ("Deletions after this point of the feed were purged (tombstones are kept "
               "CONTACTSYNC_TOMBSTONE_RETENTION_DAYS); start again with a recent updatedSince, "
               "or from the start of the feed to rebuild your copy.")


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"
    message = "A valid bearer token is required."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="contactsync"'})


class InsufficientScope(ApiError):
    status, code = 403, "insufficient_scope"


class TenantMismatch(ApiError):
    status, code = 403, "tenant_mismatch"
    message = "X-Tenant-Id does not name the tenant this token belongs to."


class NotFound(ApiError):
    status, code = 404, "not_found"
    message = "There is nothing at this address."


class MethodNotAllowed(ApiError):
    status, code = 405, "method_not_allowed"
    message = "This address does not take that method."


class IdentityConflict(ApiError):
    status, code = 409, "identity_conflict"
    message = "The identities of this contact (externalId, email, username) belong to different contacts."


class IdempotencyKeyInProgress(ApiError):
    status, code = 409, "idempotency_key_in_progress"
    message = "A request with this Idempotency-Key is still running; retry when it has answered."


class IdempotencyKeyReused(ApiError):
    status, code = 422, "idempotency_key_reused"
    message = "This Idempotency-Key was used for another request (another body, method or path)."


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"
    message = "The request body is larger than this server accepts."


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"
    message = "Send the body as application/json."


class RateLimited(ApiError):
    status, code = 429, "rate_limited"
    message = "This token sent more requests than its rate limit allows; retry after Retry-After seconds."

    def __init__(self, message: str | None = None) -> None:
        # app/web/rate_limits.py puts the window's real remainder here; 1 s if it cannot.
        super().__init__(message, headers={"Retry-After": "1"})


class DatabaseUnavailable(ApiError):
    status, code = 503, "database_unavailable"
    message = "The database is unavailable; retry shortly."

    def __init__(self, message: str | None = None, retry_after: int = 2) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class IntercomRejected(ApiError):
    """Intercom's door: a body it does not take; `errors` are Intercom's entries
    (field_not_found, type_mismatch, parameter_invalid), each naming its field."""

    status, code = 422, "intercom_rejected"

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__(errors[0]["message"])
        self.errors = errors


class JobNotFound(ApiError):
    status, code = 404, "job_not_found"


class JobClosed(ApiError):
    status, code = 403, "forbidden"


# Werkzeug raises these itself (routing, body limits); answer them in our envelope.
HTTP_ERRORS: dict[int, type[ApiError]] = {
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    429: RateLimited,  # raised by Flask-Limiter
}


INTERCOM_PREFIX = "/intercom"
# Our codes as Intercom names them; a code not listed keeps its own name.
INTERCOM_CODES = {
    "insufficient_scope": "forbidden", "tenant_mismatch": "forbidden",
    "invalid_json": "parameter_invalid", "rate_limited": "rate_limit_exceeded",
    "internal_error": "server_error", "database_unavailable": "service_unavailable",
}
INTERCOM_MESSAGES = {"unauthorized": "Access Token Invalid"}


def intercom_error_response(error: ApiError):
    """Render an ApiError as Intercom's error.list, with its status and headers."""
    errors = getattr(error, "errors", None) or [{
        "code": INTERCOM_CODES.get(error.code, error.code),
        "message": INTERCOM_MESSAGES.get(error.code, error.message)}]
    response = jsonify({"type": "error.list", "request_id": intercom_request_id(), "errors": errors})
    response.status_code = error.status
    response.headers.update(error.headers)
    return response


def intercom_request_id() -> str:
    """The request's id (X-Request-Id) as Intercom shows one: a UUID when we made it."""
    request_id = g.get("request_id") or uuid.uuid4().hex
    try:
        return str(uuid.UUID(hex=request_id))
    except ValueError:  # the client's own X-Request-Id, kept as it was sent
        return request_id


def is_intercom_request() -> bool:
    path = request.path
    return path == INTERCOM_PREFIX or path.startswith(INTERCOM_PREFIX + "/")


def error_response(error: ApiError):
    """Render an ApiError as the JSON envelope with its status and headers
    (Intercom's error.list under its door)."""
    if is_intercom_request():
        return intercom_error_response(error)
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details is not None:
        body["details"] = error.details
    response = jsonify({"success": False, "error": body})
    response.status_code = error.status
    response.headers.update(error.headers)
    return response


def handle_http_exception(exc: HTTPException):
    """Map a Werkzeug error to our envelope; unknown 4xx keep their status."""
    error_class = HTTP_ERRORS.get(exc.code or 500)
    if error_class is not None:
        error = error_class()
    elif exc.code is not None and 400 <= exc.code < 500:
        error = InvalidRequest(exc.description)
        error.status = exc.code
    else:
        return handle_unexpected(exc)
    if exc.code == 405 and exc.response is None:
        error.headers["Allow"] = ", ".join(getattr(exc, "valid_methods", None) or [])
    return error_response(error)


def handle_unexpected(exc: Exception):
    """A bug: log it with its traceback, show nothing of it."""
    log.exception("unhandled error: %s", type(exc).__name__)
    return error_response(ApiError())


def register_error_handlers(app: Flask) -> None:
    """Install the handlers so that no error leaves the app outside the envelope."""
    app.register_error_handler(ApiError, error_response)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
