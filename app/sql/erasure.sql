-- Statements of erasure (app/engine/erasure.py, DESIGN 9): a deletion and
-- everything it takes with it, in the deleting transaction.

-- name: select-contacts-to-delete
-- The tenant's contacts that these ids, externalIds, emails (normalised) or
-- usernames (lower-cased) name, read without a lock: what they mention
-- tells which pending chunks to lock first (app/engine/erasure.py).
SELECT id, external_id, email, username
FROM contacts
WHERE tenant_id = %(tenant_id)s
  AND (id = ANY(%(ids)b::bigint[]) OR external_id = ANY(%(external_ids)b::text[])
       OR email = ANY(%(emails)b::text[]) OR username = ANY(%(usernames)b::text[]));

-- name: lock-contacts-to-delete
-- The same contacts, locked in id order like every batch's row locks, so
-- deletions and batches over the same contacts queue instead of
-- deadlocking. A row changed while this waited is checked again against the
-- identifiers as it now stands (READ COMMITTED), so what is deleted is the
-- contact that holds the identifier when the deletion runs.
SELECT id, external_id, email, username
FROM contacts
WHERE tenant_id = %(tenant_id)s
  AND (id = ANY(%(ids)b::bigint[]) OR external_id = ANY(%(external_ids)b::text[])
       OR email = ANY(%(emails)b::text[]) OR username = ANY(%(usernames)b::text[]))
ORDER BY id
FOR UPDATE;

-- name: lock-pending-chunks-mentioning
-- Pending batch task chunks whose rows name the contacts about to be erased,
-- locked before the contacts, in the order a worker locks (its chunk, then
-- contacts), so an erasure and a worker applying such a chunk queue rather
-- than deadlock: the worker's chunk applies first, or its rows are dropped.
SELECT task_id, seq, rows, erased_indexes
FROM batch_task_chunks
WHERE tenant_id = %(tenant_id)s AND state = 'pending' AND mentions && %(mentions)s::text[]
ORDER BY position
FOR UPDATE;

-- name: drop-erased-rows
-- Those chunks' rows without the erased ones (null in their place, their
-- indexes in erased_indexes), validated again when they apply.
UPDATE batch_task_chunks AS c
SET rows = r.rows, erased_indexes = ARRAY(SELECT json_array_elements_text(r.erased)::integer),
    mentions = ARRAY(SELECT json_array_elements_text(r.mentions)), prepared = NULL
FROM unnest(%(task_ids)b::bigint[], %(seqs)b::integer[], %(rows)b::text[], %(erased)b::json[],
            %(mentions)b::json[]) AS r (task_id, seq, rows, erased, mentions)
WHERE c.tenant_id = %(tenant_id)s AND c.task_id = r.task_id AND c.seq = r.seq;

-- name: delete-contacts
-- The locked contacts go; their tag, folder and company links go with them
-- (ON DELETE CASCADE, schema.sql), and each leaves its tombstone at this
-- transaction's position in the change feed.
WITH gone AS (
    DELETE FROM contacts
    WHERE tenant_id = %(tenant_id)s AND id = ANY(%(ids)b::bigint[])
    RETURNING tenant_id, id, external_id
)
INSERT INTO contact_tombstones (tenant_id, contact_id, external_id)
SELECT tenant_id, id, external_id FROM gone;

-- name: delete-contact-events
-- Every webhook event of the deleted contacts, pending or past: each holds
-- the contact as it was. A dispatcher delivering one right now settles
-- nothing afterwards (its row is gone), which is all it would have done.
DELETE FROM webhook_events
WHERE tenant_id = %(tenant_id)s AND contact_id = ANY(%(ids)b::bigint[]);

-- name: insert-deletion-events
-- One contact.deleted event per deleted contact, with its tombstone, while
-- the tenant's webhook is enabled, whether or not the request asked for
-- workflows: a deletion must reach the systems downstream.
INSERT INTO webhook_events (tenant_id, event_id, type, contact_id, contact, changed_fields)
SELECT d.tenant_id, 'msg_' || replace(gen_random_uuid()::text, '-', ''), 'contact.deleted',
       d.contact_id, tombstone_json(d), '{}'
FROM contact_tombstones AS d
JOIN tenants AS t ON t.id = d.tenant_id AND t.webhook_enabled
WHERE d.tenant_id = %(tenant_id)s AND d.contact_id = ANY(%(ids)b::bigint[])
ORDER BY d.contact_id;

-- name: blank-answers-mentioning
-- Idempotency-Key answers that carry a deleted contact or echo one of its
-- identities: the body is replaced, the key, fingerprint and status kept, so
-- a retry with the key still replays (and applies nothing again) but shows
-- nothing of the contact.
UPDATE idempotency_keys
SET body = %(body)s, mentions = '{}'
WHERE tenant_id = %(tenant_id)s AND mentions && %(mentions)s::text[];

-- name: select-chunk-outcomes-mentioning
-- Applied batch task chunks whose outcomes echo a deleted contact's
-- identities, locked for their rewrite.
SELECT task_id, seq, results
FROM batch_task_chunks
WHERE tenant_id = %(tenant_id)s AND state = 'done' AND mentions && %(mentions)s::text[]
ORDER BY task_id, seq
FOR UPDATE;

-- name: update-chunk-outcomes
-- The rewritten outcomes of those chunks, with what they mention now.
UPDATE batch_task_chunks AS c
SET results = r.results, mentions = ARRAY(SELECT json_array_elements_text(r.mentions))
FROM unnest(%(task_ids)b::bigint[], %(seqs)b::integer[], %(results)b::json[], %(mentions)b::json[])
     AS r (task_id, seq, results, mentions)
WHERE c.tenant_id = %(tenant_id)s AND c.task_id = r.task_id AND c.seq = r.seq;

-- name: purge-tombstones
-- Delete a bounded slice of tombstones older than the retention, and move
-- each tenant's purge mark up to the newest one purged, in one statement: a
-- feed cursor before the mark gets 410 cursor_expired (app/engine/reads.py).
WITH purged AS (
    DELETE FROM contact_tombstones
    WHERE (tenant_id, contact_id) IN (
        SELECT tenant_id, contact_id FROM contact_tombstones
        WHERE deleted_at < now() - make_interval(days => %(retention_days)s)
        LIMIT %(limit)s)
    RETURNING tenant_id, contact_id, change_xid, deleted_at
), newest AS (
    SELECT DISTINCT ON (tenant_id) tenant_id, change_xid, contact_id,
           max(deleted_at) OVER (PARTITION BY tenant_id) AS deleted_at
    FROM purged
    ORDER BY tenant_id, change_xid DESC, contact_id DESC
), marked AS (
    -- Each part of the mark only moves up: the position to the newest
    -- purged, the time to the latest deletion purged (they need not be the
    -- same tombstone's: a transaction's id is taken when it first writes).
    UPDATE tenants AS t
    SET (tombstones_purged_xid, tombstones_purged_id) = (
            CASE WHEN t.tombstones_purged_xid IS NULL
                      OR (t.tombstones_purged_xid, t.tombstones_purged_id) < (n.change_xid, n.contact_id)
                 THEN n.change_xid ELSE t.tombstones_purged_xid END,
            CASE WHEN t.tombstones_purged_xid IS NULL
                      OR (t.tombstones_purged_xid, t.tombstones_purged_id) < (n.change_xid, n.contact_id)
                 THEN n.contact_id ELSE t.tombstones_purged_id END),
        tombstones_purged_deleted_at = greatest(t.tombstones_purged_deleted_at, n.deleted_at)
    FROM newest AS n
    WHERE t.id = n.tenant_id
)
SELECT count(*) AS purged FROM purged;

-- name: lock-shown-contacts
-- The contacts an answer about to be stored shows by id, locked FOR KEY
-- SHARE until the answer's transaction commits: an erasure of one of them
-- (FOR UPDATE) waits for it, and then blanks the stored answer; one that
-- committed first has left no row here, and the answer is blanked now.
SELECT id
FROM contacts
WHERE tenant_id = %(tenant_id)s AND id = ANY(%(ids)b::bigint[])
FOR KEY SHARE;
