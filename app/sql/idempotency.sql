-- Statements of idempotency keys (app/engine/idempotency.py).

-- name: select-idempotent-answer
-- The answer a key already has, if it has not expired; an expired one waits
-- for the purge and counts as none.
SELECT fingerprint, status, body
FROM idempotency_keys
WHERE tenant_id = %(tenant_id)s AND key = %(key)s AND expires_at > now();

-- name: try-lock-idempotency-key
-- Held until the request's transaction ends. try_: a second request with the
-- same key is answered 409 at once instead of queueing behind the first.
SELECT pg_try_advisory_xact_lock(
    hashtextextended('contactsync.idempotency:' || %(key)s, %(tenant_id)s::bigint)) AS locked;

-- name: lock-idempotency-key
-- The same lock, waited for: a request's own retry after its attempt rolled
-- back (and so released the key) must not be refused its own key.
SELECT true AS locked
FROM pg_advisory_xact_lock(
    hashtextextended('contactsync.idempotency:' || %(key)s, %(tenant_id)s::bigint));

-- name: upsert-idempotent-answer
-- Under the key's lock, with no unexpired answer found: a row still here is
-- an expired one the purge has not reached, and it is replaced.
INSERT INTO idempotency_keys (tenant_id, key, fingerprint, status, body, mentions, expires_at)
VALUES (%(tenant_id)s, %(key)s, %(fingerprint)s, %(status)s, %(body)s, %(mentions)s::text[],
        now() + make_interval(secs => %(ttl_seconds)s))
ON CONFLICT (tenant_id, key) DO UPDATE
SET fingerprint = excluded.fingerprint, status = excluded.status, body = excluded.body,
    mentions = excluded.mentions, created_at = now(), expires_at = excluded.expires_at;

-- name: purge-expired-idempotency-keys
-- A bounded slice per call, like the event purge. expires_at is checked again
-- outside the subquery: a key renewed (upsert-idempotent-answer) while this
-- waited for its row lock is re-checked here and kept.
DELETE FROM idempotency_keys
WHERE (tenant_id, key) IN (
    SELECT tenant_id, key FROM idempotency_keys WHERE expires_at <= now() LIMIT %(limit)s
)
  AND expires_at <= now();
