"""Bearer tokens: minting, hashing, and the per-route tenant + scope check.

Tokens look like `cs_` + 43 url-safe characters (256 random bits). Only their
SHA-256 is stored, so a leaked database does not leak working tokens; a
fast hash is enough because the input is random, not a password. The first
characters are kept apart as a non-secret prefix to list and revoke by.
This is the only module that reads the Authorization header.
"""

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

import psycopg
from flask import g, request

from app.db import get_conn
from app.errors import InsufficientScope, TenantMismatch, Unauthorized
from app.sql import queries

TOKEN_PREFIX = "cs_"
DISPLAY_PREFIX_LENGTH = len(TOKEN_PREFIX) + 8
SCOPES = frozenset({"contacts:read", "contacts:write", "jobs:read", "jobs:write"})
# Anything else is not a token of ours; refusing it early keeps junk off the database.
MAX_TOKEN_LENGTH = 200


@dataclass(frozen=True)
class NewToken:
    """A freshly minted token: `secret` is shown once and never stored."""

    secret: str
    prefix: str
    token_hash: bytes


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's tenant and scopes."""

    token_id: int
    tenant_id: int
    tenant_slug: str
    scopes: frozenset[str]


def hash_token(secret: str) -> bytes:
    """The stored form of a token."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


def mint_token() -> NewToken:
    """A new random token with its display prefix and hash."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return NewToken(secret, secret[:DISPLAY_PREFIX_LENGTH], hash_token(secret))


def create_token(conn: psycopg.Connection, tenant_id: int, scopes: list[str]) -> tuple[NewToken, dict]:
    """Store a new token for a tenant; returns it (with its secret) and its row."""
    unknown = set(scopes) - SCOPES
    if unknown or not scopes:
        raise ValueError(f"scopes must be among {', '.join(sorted(SCOPES))}")
    token = mint_token()
    row = conn.execute(queries["insert-token"],
                       {"tenant_id": tenant_id, "prefix": token.prefix,
                        "token_hash": token.token_hash, "scopes": sorted(set(scopes))}).fetchone()
    return token, row


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
    row = conn.execute(queries["select-token-by-hash"], {"token_hash": token_hash}).fetchone()
    # The look-up is by hash, so timing reveals nothing of the token; the
    # constant-time compare guards against a look-up that ever matches loosely.
    if row is None or not hmac.compare_digest(bytes(row["token_hash"]), token_hash):
        raise Unauthorized("The bearer token is not valid.")
    if row["revoked_at"] is not None:
        raise Unauthorized("The bearer token was revoked.")
    if row["needs_touch"]:  # at most once a minute: most requests skip this round trip
        conn.execute(queries["touch-token"], {"tenant_id": row["tenant_id"], "id": row["id"]})
    return Principal(row["id"], row["tenant_id"], row["tenant_slug"], frozenset(row["scopes"]))


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
