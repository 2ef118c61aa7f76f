"""A request's JSON body, read and parsed the same way by every door.

415 unless it is JSON, 413 when it is too large, 400 invalid_json when it
does not parse: NaN and Infinity, bad UTF-8, absurd nesting and over-long
numbers included, each with a reason in our words.
"""

import json
from collections.abc import Callable
from typing import Any

from flask import current_app, request
from marshmallow import Schema, ValidationError

from app.errors import BatchSize, InvalidJson, InvalidRequest, PayloadTooLarge, UnsupportedMediaType


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


def load_entry_request(raw: bytes, envelope: Schema, load_entries: Callable[[list[Any]], tuple[list, dict]],
                       max_entries: int, nothing_done: str) -> tuple[list[Any], list[dict]]:
    """A by-identifier door's body, `{"contacts": [...]}`: the entries as sent and
    as loaded. 400 invalid_request (naming every bad entry by index under
    details.contacts) or batch_size; `nothing_done` ends the message ("nothing
    was queued")."""
    try:
        sent = envelope.load(parse_json(raw))["contacts"]
    except ValidationError as exc:
        raise InvalidRequest(details=exc.messages) from None
    if not 1 <= len(sent) <= max_entries:
        raise BatchSize(f"Send between 1 and {max_entries} contacts per request.",
                        details={"min": 1, "max": max_entries, "received": len(sent)})
    entries, problems = load_entries(sent)
    if problems:
        raise InvalidRequest(f"Some entries are not of the documented shape; {nothing_done}.",
                             details={"contacts": problems})
    return sent, entries
