"""One JSON log line per request: request id, tenant, route, status, row counts, duration.

Never headers, query strings or bodies: the Authorization header carries a
working token, and queries and bodies carry people's addresses. The route is
the URL rule (`/contacts/<int:contact_id>`), not the path. A request id the
client sends in X-Request-Id (short and printable) is kept, else one is made;
either way the answer carries it back.
"""

import json
import logging
import sys
import time
import uuid
from typing import Any

from flask import Flask, Response, g, request

log = logging.getLogger("contactsync.requests")

MAX_REQUEST_ID_LENGTH = 128


def init_app(app: Flask) -> None:
    """Time every request and log it when it has been answered."""
    if not log.handlers:  # gunicorn leaves application loggers unconfigured
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    app.before_request(start_request)
    app.after_request(log_request)


def start_request() -> None:
    """Note when the request began and which id it goes by."""
    g.request_started = time.perf_counter()
    sent = request.headers.get("X-Request-Id", "")
    sane = 0 < len(sent) <= MAX_REQUEST_ID_LENGTH and sent.isascii() and sent.isprintable()
    g.request_id = sent if sane else uuid.uuid4().hex


def note_counts(**counts: Any) -> None:
    """Let the view add what happened to the rows to this request's log line."""
    g.request_counts = counts


def log_request(response: Response) -> Response:
    """Write the request's line and hand its id back."""
    request_id = g.get("request_id") or uuid.uuid4().hex
    response.headers["X-Request-Id"] = request_id
    principal = g.get("principal")
    started = g.get("request_started")
    line = {
        "requestId": request_id,
        "method": request.method,
        "route": request.url_rule.rule if request.url_rule is not None else None,
        "status": response.status_code,
        "tenant": principal.tenant_slug if principal is not None else None,
        "durationMs": round((time.perf_counter() - started) * 1000, 1) if started else None,
        "replayed": response.headers.get("Idempotent-Replayed") == "true",
        **({"counts": g.request_counts} if "request_counts" in g else {}),
    }
    log.info(json.dumps(line, separators=(",", ":")))
    return response
