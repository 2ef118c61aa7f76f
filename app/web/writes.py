"""The transaction of every write door: retried on races, and with an
Idempotency-Key claimed first and its answer stored before commit.

A door validates its request, then hands `run_write` a `work(conn, attempt)`
that returns (body, status); the answer is built here, so that with a key
the exact bytes sent are the bytes stored and replayed (app/engine/idempotency.py).
A dry run hands the same `work` to `dry_run_answer` instead: one read-only
transaction, no key.
"""

from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from flask import Response, current_app, g, request

from app.db import get_conn, run_in_transaction, run_read_only
from app.engine.erasure import answer_to_keep, mentions_of
from app.engine.idempotency import (
    MAX_KEY_LENGTH,
    StoredAnswer,
    find_answer,
    request_fingerprint,
    store_answer,
    try_claim,
)
from app.errors import IdempotencyKeyInProgress, IdempotencyKeyReused, InvalidRequest


@dataclass(frozen=True)
class Idempotency:
    """A request's Idempotency-Key and what makes it "the same request"."""

    key: str
    fingerprint: bytes


def idempotency_of_request(raw_body: bytes, variant: str = "") -> Idempotency | None:
    """The request's Idempotency-Key, checked, with its fingerprint; None without one.
    `variant` tells apart requests of one path and body that ask for different
    things (a batch task rather than a synchronous write)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise InvalidRequest(details={"Idempotency-Key": [
            f"1 to {MAX_KEY_LENGTH} printable ASCII characters."]})
    path = f"{request.path} {variant}" if variant else request.path
    return Idempotency(key, request_fingerprint(request.method, path, raw_body))


def replay_if_answered(idempotency: Idempotency) -> Response | None:
    """The replay of an earlier answer under this key, if there is one (or 422)."""
    with get_conn() as conn:
        answer = find_answer(conn, g.principal.tenant_id, idempotency.key)
    return None if answer is None else replay(answer, idempotency)


def claim(conn: psycopg.Connection, tenant_id: int, idempotency: Idempotency,
          wait: bool) -> StoredAnswer | None:
    """Hold the key for this transaction, and return the answer another request
    with it committed since our look-up, if one did. 409 while another request
    holds the key, unless `wait` (a retry of ours, which released the key when
    its attempt rolled back and must not be turned away from its own key)."""
    if not try_claim(conn, tenant_id, idempotency.key, wait=wait):
        raise IdempotencyKeyInProgress()
    return find_answer(conn, tenant_id, idempotency.key)


def replay(answer: StoredAnswer, idempotency: Idempotency) -> Response:
    """The first answer again, byte for byte, if it answered this very request."""
    if answer.fingerprint != idempotency.fingerprint:
        raise IdempotencyKeyReused()
    return Response(answer.body, answer.status, mimetype="application/json" if answer.body else None,
                    headers={"Idempotent-Replayed": "true"})


def run_write(work: Callable[[psycopg.Connection, int], tuple[dict | None, int]],
              idempotency: Idempotency | None) -> Response:
    """Run `work(conn, attempt)` in one transaction, retried on races, and answer
    with the (body, status) it returns (body None: no content, as a 204).

    With an Idempotency-Key the key is claimed first and the answer stored in
    the same transaction, so it exists exactly when the write committed.
    """
    tenant_id = g.principal.tenant_id

    def attempt_write(conn: psycopg.Connection, attempt: int) -> Response:
        if idempotency is not None:
            answered = claim(conn, tenant_id, idempotency, wait=attempt > 1)
            if answered is not None:  # committing this read-only transaction is harmless
                return replay(answered, idempotency)
        body, status = work(conn, attempt)
        response = Response(status=status) if body is None else current_app.json.response(body)
        response.status_code = status
        if idempotency is not None:
            # A contact the answer shows may be erased while this commits:
            # the stored answer then holds none of it (app/engine/erasure.py).
            kept, mentions = answer_to_keep(conn, tenant_id, response.get_data(), mentions_of(body))
            store_answer(conn, tenant_id, idempotency.key,
                         StoredAnswer(idempotency.fingerprint, status, kept, tuple(mentions)),
                         current_app.config["IDEMPOTENCY_TTL_SECONDS"])
        return response

    with get_conn() as conn:
        return run_in_transaction(conn, attempt_write, attempts=current_app.config["TX_ATTEMPTS"])


def dry_run_answer(work: Callable[[psycopg.Connection, int], tuple[dict, int]],
                   idempotency: Idempotency | None) -> Response:
    """A dry run (DESIGN 15): `work` in one read-only transaction, no key stored.
    It writes nothing and locks no row, so it needs no retry."""
    if idempotency is not None:
        raise InvalidRequest("A dry run writes nothing, so it takes no Idempotency-Key.",
                             details={"Idempotency-Key": ["Not allowed with dryRun."]})
    with get_conn() as conn:
        body, status = run_read_only(conn, lambda c: work(c, 1))
    response = current_app.json.response(body)
    response.status_code = status
    return response
