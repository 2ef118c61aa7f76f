"""Bearer tokens on requests: the per-route token, tenant and scope check.

This is the only module that reads the Authorization header. Tokens
themselves (minting, hashing, storage) are app/engine/tokens.py's.
"""

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

import psycopg
from flask import g, request

from app.db import get_conn
from app.engine.tokens import SCOPES, TOKEN_PREFIX, find_token, hash_token, record_token_use
from app.errors import InsufficientScope, TenantMismatch, Unauthorized

# Anything else is not a token of ours; refusing it early keeps junk off the database.
MAX_TOKEN_LENGTH = 200


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's tenant and scopes."""

    tenant_id: int
    tenant_slug: str
    scopes: frozenset[str]


def bearer_secret() -> str:
    """The token of the Authorization header, or 401."""
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise Unauthorized("Send Authorization: Bearer <token>.")
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > MAX_TOKEN_LENGTH or not secret.isascii():
        raise Unauthorized("The bearer token is malformed.")
    return secret


def authenticate(conn: psycopg.Connection, secret: str) -> Principal:
    """Look the token up by its hash; unknown or revoked tokens are 401."""
    token_hash = hash_token(secret)
    row = find_token(conn, token_hash)
    # The look-up is by hash, so timing reveals nothing of the token; the
    # constant-time compare guards against a look-up that ever matches loosely.
    if row is None or not hmac.compare_digest(bytes(row["token_hash"]), token_hash):
        raise Unauthorized("The bearer token is not valid.")
    if row["revoked_at"] is not None:
        raise Unauthorized("The bearer token was revoked.")
    record_token_use(conn, row)
    return Principal(row["tenant_id"], row["tenant_slug"], frozenset(row["scopes"]))


def require_scope(scope: str) -> Callable:
    """Route guard: token (401), then X-Tenant-Id (403), then scope (403).

    On success `g.principal` names the caller; the tenant always comes from
    the token, the header can only confirm it.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            secret = bearer_secret()
            with get_conn() as conn:
                principal = authenticate(conn, secret)
            claimed_tenant = request.headers.get("X-Tenant-Id")
            if claimed_tenant is not None and claimed_tenant != principal.tenant_slug:
                raise TenantMismatch()
            if scope not in principal.scopes:
                raise InsufficientScope(f"This token lacks the {scope} scope.",
                                        details={"requiredScope": scope})
            g.principal = principal
            return view(*args, **kwargs)

        return guarded

    return decorator
