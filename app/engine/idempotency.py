"""Idempotency keys: a retried write gets its first answer back instead of being applied twice.

A key is claimed with a transaction-level advisory lock inside the write's
own transaction, and the answer is stored in that same transaction: a write
that fails (any non-2xx answer) rolls back and stores nothing, so it can be
retried with the same key; one that commits stores its answer atomically
with its effects. A second request while the first holds the lock is told
so rather than made to wait. Plain values in and out: no Flask here.
"""

import hashlib
from dataclasses import dataclass

import psycopg

from app.sql import queries

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class StoredAnswer:
    """The first answer given under a key, and which request it answered."""

    fingerprint: bytes
    status: int
    body: bytes
    mentions: tuple[str, ...] = ()  # the contacts it speaks of (app/engine/erasure.py, mentions_of)


def request_fingerprint(method: str, path: str, body: bytes) -> bytes:
    """What "the same request" means: the same bytes to the same method and path."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))  # length-prefixed: no two splits collide
        digest.update(part)
    return digest.digest()


def find_answer(conn: psycopg.Connection, tenant_id: int, key: str) -> StoredAnswer | None:
    """The answer stored under the tenant's key, unless it expired."""
    row = conn.execute(queries["select-idempotent-answer"], {"tenant_id": tenant_id, "key": key}).fetchone()
    return None if row is None else StoredAnswer(bytes(row["fingerprint"]), row["status"], bytes(row["body"]))


def try_claim(conn: psycopg.Connection, tenant_id: int, key: str, wait: bool = False) -> bool:
    """Take the key's lock for this transaction; False when another request holds
    it, unless `wait`: then wait for it (bounded by lock_timeout)."""
    query = queries["lock-idempotency-key" if wait else "try-lock-idempotency-key"]
    return conn.execute(query, {"tenant_id": tenant_id, "key": key}).fetchone()["locked"]


def store_answer(conn: psycopg.Connection, tenant_id: int, key: str, answer: StoredAnswer,
                 ttl_seconds: int) -> None:
    """Keep the answer under the key for `ttl_seconds`, in the caller's transaction."""
    conn.execute(queries["upsert-idempotent-answer"], {
        "tenant_id": tenant_id, "key": key, "fingerprint": answer.fingerprint,
        "status": answer.status, "body": answer.body, "mentions": list(answer.mentions),
        "ttl_seconds": ttl_seconds,
    })


def purge_expired_keys(conn: psycopg.Connection, limit: int = 10_000) -> int:
    """Delete up to `limit` expired keys; return how many."""
    return conn.execute(queries["purge-expired-idempotency-keys"], {"limit": limit}).rowcount
