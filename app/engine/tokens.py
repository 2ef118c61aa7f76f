"""API tokens: minting, hashing and storing them, and finding one by its hash.

Tokens look like `cs_` + 43 url-safe characters (256 random bits). Only their
SHA-256 is stored, so a leaked database does not leak working tokens; a
fast hash is enough because the input is random, not a password. The first
characters are kept apart as a non-secret prefix to list and revoke by.
Plain values in and out; reading the Authorization header is app/auth.py's.
"""

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg

from app.sql import queries

TOKEN_PREFIX = "cs_"
DISPLAY_PREFIX_LENGTH = len(TOKEN_PREFIX) + 8
SCOPES = frozenset({"contacts:read", "contacts:write", "jobs:read", "jobs:write"})


@dataclass(frozen=True)
class NewToken:
    """A freshly minted token: `secret` is shown once and never stored."""

    secret: str
    prefix: str
    token_hash: bytes


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


def find_token(conn: psycopg.Connection, token_hash: bytes) -> dict[str, Any] | None:
    """The token with this hash, with its tenant's slug, or None."""
    return conn.execute(queries["select-token-by-hash"], {"token_hash": token_hash}).fetchone()


def record_token_use(conn: psycopg.Connection, token: dict[str, Any]) -> None:
    """Note that a token found by `find_token` was used: at most once a minute,
    so most requests skip this round trip."""
    if token["needs_touch"]:
        conn.execute(queries["touch-token"], {"tenant_id": token["tenant_id"], "id": token["id"]})


def list_tokens(conn: psycopg.Connection, tenant_id: int) -> list[dict[str, Any]]:
    """The tenant's tokens, oldest first: prefixes and dates, never secrets."""
    return conn.execute(queries["list-tokens"], {"tenant_id": tenant_id}).fetchall()


def revoke_tokens(conn: psycopg.Connection, prefix: str) -> int:
    """Revoke the active tokens with this display prefix; return how many."""
    return len(conn.execute(queries["revoke-tokens-by-prefix"], {"prefix": prefix}).fetchall())
