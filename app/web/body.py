"""A request's JSON body, read and parsed the same way by every door.

415 unless it is JSON, 413 when it is too large, 400 invalid_json when it
does not parse: NaN and Infinity, bad UTF-8, absurd nesting and over-long
numbers included, each with a reason in our words.
"""

import json
from typing import Any

from flask import current_app, request

from app.errors import InvalidJson, PayloadTooLarge, UnsupportedMediaType


def read_body(max_bytes: int | None = None) -> bytes:
    """The request body's bytes: 415 unless JSON, then 413 when larger than
    `max_bytes` (default CONTACTSYNC_MAX_BODY_BYTES)."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType()
    limit = max_bytes or current_app.config["MAX_BODY_BYTES"]
    request.max_content_length = limit  # over the app's default for a batch task's body
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
