"""Request rate limits per token (Flask-Limiter), with RateLimit-* headers on every answer.

One budget per token, shared by every limited route: CONTACTSYNC_RATE_LIMIT
(default 600/minute, `off` for none) in fixed windows. A request without a
bearer token counts against its remote address. The counters live in this
process's memory unless CONTACTSYNC_RATE_LIMIT_STORAGE names a Redis server;
with several gunicorn workers or hosts only Redis gives one shared count.
If Redis stops answering, requests are counted in memory until it is back:
a short socket timeout keeps that from slowing answers down. The probes and
the API document are never limited.
"""

import logging
import math
import time

from flask import Flask, Response, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from app.auth import bearer_secret
from app.engine.tokens import hash_token
from app.errors import Unauthorized

log = logging.getLogger(__name__)

UNLIMITED_PATHS = ("/health", "/ready", "/openapi.json", "/docs")
# How long a Redis command may take before the limiter counts in memory instead.
REDIS_TIMEOUT_SECONDS = 0.25


def rate_limit_key() -> str:
    """Whose budget this request spends: its bearer token's, else (no token, or
    a malformed one) its address's.

    The token is hashed (as in the tokens table) so that no working token is
    kept in the limiter's storage.
    """
    try:
        return "token:" + hash_token(bearer_secret()).hex()
    except Unauthorized:
        return "address:" + get_remote_address()


def is_unlimited() -> bool:
    """The probes and the document (and /docs' assets) spend no budget."""
    path = request.path
    return path in UNLIMITED_PATHS or path.startswith("/docs/")


def init_app(app: Flask) -> None:
    """Limit every route but the unlimited ones, unless RATE_LIMIT is off."""
    if app.config["RATE_LIMIT"] is None:
        return
    storage = app.config["RATE_LIMIT_STORAGE"]
    options = {} if storage.startswith("memory://") else {
        "socket_timeout": REDIS_TIMEOUT_SECONDS, "socket_connect_timeout": REDIS_TIMEOUT_SECONDS}
    limiter = Limiter(
        rate_limit_key, app=None, application_limits=[app.config["RATE_LIMIT"]],
        storage_uri=storage, storage_options=options, strategy="fixed-window",
        key_prefix="contactsync", headers_enabled=False,  # ours below: Reset in seconds, not epoch
        in_memory_fallback_enabled=True, swallow_errors=True)
    limiter.request_filter(is_unlimited)
    limiter.init_app(app)

    @app.after_request
    def add_rate_limit_headers(response: Response) -> Response:
        return with_rate_limit_headers(limiter, response)


def with_rate_limit_headers(limiter: Limiter, response: Response) -> Response:
    """RateLimit-Limit, -Remaining, -Reset (seconds) and -Policy; Retry-After on a 429."""
    current = limiter.current_limit
    if current is None:  # an unlimited path, or a request that never reached the limiter
        return response
    try:
        window = current.window  # one storage read: (reset time, remaining)
        reset_in = max(0, math.ceil(window.reset_time - time.time()))
    except Exception as exc:  # the storage failed after the check: answer without the headers
        log.warning("rate limit headers skipped: %s", type(exc).__name__)
        return response
    item = current.limit
    response.headers["RateLimit-Limit"] = str(item.amount)
    response.headers["RateLimit-Remaining"] = str(window.remaining)
    response.headers["RateLimit-Reset"] = str(reset_in)
    response.headers["RateLimit-Policy"] = f"{item.amount};w={item.get_expiry()}"
    if response.status_code == 429:
        response.headers["Retry-After"] = str(max(1, reset_in))
    return response
