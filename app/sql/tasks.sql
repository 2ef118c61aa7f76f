-- Batch tasks (DESIGN 10): submission, claims, applying a chunk, reading, cancelling, purging.

-- name: insert-task
-- A new task, in the submitting request's transaction (its chunks follow);
-- job_id is the job it belongs to (Intercom's door), else null.
INSERT INTO batch_tasks (tenant_id, kind, run_workflow, total_count, job_id)
VALUES (%(tenant_id)s, %(kind)s, %(run_workflow)s, %(total_count)s, %(job_id)s)
RETURNING id;

-- name: insert-task-chunks
-- A task's chunks in one statement, from parallel arrays; position follows
-- the order of the arrays, so the chunks apply in the order sent. Binary
-- parameters: a text array literal would escape every quote of the JSON.
-- mentions are what each chunk's rows name (app/engine/erasure.py), one json
-- array per chunk (unnest would flatten an array of arrays).
INSERT INTO batch_task_chunks (tenant_id, task_id, seq, first_index, row_count, rows, mentions)
SELECT %(tenant_id)s, %(task_id)s, c.seq, c.first_index, c.row_count, c.rows,
       ARRAY(SELECT json_array_elements_text(c.mentions))
FROM unnest(%(seqs)b::integer[], %(first_indexes)b::integer[], %(row_counts)b::integer[],
            %(rows)b::text[], %(mentions)b::json[]) AS c (seq, first_index, row_count, rows, mentions)
ORDER BY c.seq;

-- name: complete-empty-task
-- A task with no rows to apply (Inrō's door, every identifier unknown) ends at once.
UPDATE batch_tasks
SET status = 'completed', started_at = now(), completed_at = now()
WHERE tenant_id = %(tenant_id)s AND id = %(task_id)s;

-- name: claim-task-chunk
-- Claim the oldest due chunk that is its tenant's oldest pending chunk, for
-- a lease, in one short autocommit statement. A chunk is due when nobody
-- holds a live lease on it; SKIP LOCKED passes over a chunk that a worker is
-- applying right now (its transaction holds the row lock), so that one is
-- never claimed twice even if its lease ran out. The attempt is counted
-- here, so a chunk that kills its worker still runs out of attempts. The
-- task turns `running` with its first claim.
WITH heads AS (
    SELECT DISTINCT ON (tenant_id) tenant_id, task_id, seq, position
    FROM batch_task_chunks
    WHERE state = 'pending'
    ORDER BY tenant_id, position
), due AS (
    SELECT c.tenant_id, c.task_id, c.seq
    FROM batch_task_chunks AS c
    JOIN heads AS h ON h.tenant_id = c.tenant_id AND h.task_id = c.task_id AND h.seq = c.seq
    -- The locked row's own lease, not the CTE's copy: after waiting for a
    -- claim that another worker committed meanwhile, PostgreSQL re-checks c
    -- against the new row version, but h keeps the snapshot's.
    WHERE c.state = 'pending' AND (c.lease_until IS NULL OR c.lease_until < now())
    ORDER BY h.position
    LIMIT 1
    FOR UPDATE OF c SKIP LOCKED
), claimed AS (
    UPDATE batch_task_chunks AS c
    SET lease_id = %(lease_id)s, lease_until = now() + make_interval(secs => %(lease_seconds)s),
        attempts = c.attempts + 1
    FROM due
    WHERE c.tenant_id = due.tenant_id AND c.task_id = due.task_id AND c.seq = due.seq
    RETURNING c.tenant_id, c.task_id, c.seq, c.attempts
), started AS (
    UPDATE batch_tasks AS t
    SET status = 'running', started_at = coalesce(t.started_at, now())
    FROM claimed
    WHERE t.tenant_id = claimed.tenant_id AND t.id = claimed.task_id AND t.status = 'pending'
)
SELECT tenant_id, task_id, seq, attempts FROM claimed;

-- name: lock-claimed-chunk
-- The applying transaction's guard: the chunk, still pending and still
-- claimed by this worker (its lease_id: a later claim replaces it), locked
-- until commit. No row: another worker claimed it since (or the task was
-- cancelled), and this worker must not apply it.
SELECT c.first_index, c.row_count, c.rows, c.prepared, c.erased_indexes, t.kind, t.run_workflow
FROM batch_task_chunks AS c
JOIN batch_tasks AS t ON t.tenant_id = c.tenant_id AND t.id = c.task_id
WHERE c.tenant_id = %(tenant_id)s AND c.task_id = %(task_id)s AND c.seq = %(seq)s
  AND c.state = 'pending' AND c.lease_id = %(lease_id)s
FOR UPDATE OF c;

-- name: mark-chunk-done
-- The chunk is applied: its outcomes kept with the identities they echo
-- (app/engine/erasure.py), its rows (personal data) dropped.
UPDATE batch_task_chunks
SET state = 'done', rows = NULL, prepared = NULL, results = %(results)s, mentions = %(mentions)s,
    lease_id = NULL, lease_until = NULL
WHERE tenant_id = %(tenant_id)s AND task_id = %(task_id)s AND seq = %(seq)s;

-- name: count-chunk-outcomes
-- Add an applied chunk's outcomes to its task's counters, in the chunk's own
-- transaction; the chunk that brings processed_count to total_count ends the
-- task. A cancelled task stays cancelled (a cancel waits for the chunk being
-- applied, so it cannot come first). Returns the task's status as it now stands.
UPDATE batch_tasks
SET processed_count = processed_count + %(processed)s,
    created_count = created_count + %(created)s,
    updated_count = updated_count + %(updated)s,
    unchanged_count = unchanged_count + %(unchanged)s,
    failed_count = failed_count + %(failed)s,
    stale_count = stale_count + %(stale)s,
    deleted_count = deleted_count + %(deleted)s,
    status = CASE
        WHEN status = 'cancelled' THEN status
        WHEN processed_count + %(processed)s < total_count THEN 'running'
        WHEN failed_count + %(failed)s > 0 THEN 'completed_with_errors'
        ELSE 'completed' END,
    completed_at = CASE
        WHEN status <> 'cancelled' AND processed_count + %(processed)s >= total_count THEN now()
        ELSE completed_at END
WHERE tenant_id = %(tenant_id)s AND id = %(task_id)s
RETURNING status;

-- name: select-chunk-to-prepare
-- The oldest pending chunk of native rows that nobody has validated yet and
-- no worker holds a live lease on (that one is being applied, and validates
-- as it goes). No lock while validating: a worker that applies must not find
-- its next chunk locked for the time validation takes (storing the result
-- locks it for a moment). Two idle workers may validate the same chunk; the
-- first to store it wins, and the result is the same anyway.
SELECT c.tenant_id, c.task_id, c.seq, c.rows
FROM batch_task_chunks AS c
JOIN batch_tasks AS t ON t.tenant_id = c.tenant_id AND t.id = c.task_id
WHERE c.state = 'pending' AND c.prepared IS NULL AND t.kind = 'contacts.bulk_update'
  AND (c.lease_until IS NULL OR c.lease_until < now())
ORDER BY c.position
LIMIT 1;

-- name: store-prepared-rows
-- A chunk's rows as validation left them: the valid ones with their index,
-- and the failures; unless it was applied, cancelled or prepared meanwhile,
-- or an erasure dropped some of its rows (the rows read may hold them).
UPDATE batch_task_chunks
SET prepared = %(prepared)s
WHERE tenant_id = %(tenant_id)s AND task_id = %(task_id)s AND seq = %(seq)s AND state = 'pending'
  AND prepared IS NULL AND erased_indexes = '{}';

-- name: select-task
-- One task, as every door shows it (one indexed read: what a poll costs).
SELECT id, kind, status, total_count, processed_count, created_count, updated_count,
       unchanged_count, failed_count, stale_count, deleted_count, created_at, started_at, completed_at,
       now() AS read_at
FROM batch_tasks
WHERE tenant_id = %(tenant_id)s AND id = %(task_id)s;

-- name: select-tasks
-- A page of the tenant's tasks, newest first, after the cursor's id (if any).
SELECT id, kind, status, total_count, processed_count, created_count, updated_count,
       unchanged_count, failed_count, stale_count, deleted_count, created_at, started_at, completed_at,
       now() AS read_at
FROM batch_tasks
WHERE tenant_id = %(tenant_id)s AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: select-task-results
-- The stored outcomes of the chunks that hold rows from first_index on, in
-- row order; a skipped chunk (cancelled) comes with no results.
SELECT first_index, row_count, state, results
FROM batch_task_chunks
WHERE tenant_id = %(tenant_id)s AND task_id = %(task_id)s
  AND first_index + row_count > %(from_index)s
ORDER BY seq
LIMIT %(chunks)s;

-- name: skip-pending-chunks
-- Cancelling: the chunks not yet applied are skipped. Chunks are locked
-- before the task (as an applying worker does), so a cancel never deadlocks
-- with a worker; one being applied right now is waited for, and stays applied.
UPDATE batch_task_chunks
SET state = 'skipped', rows = NULL, prepared = NULL, lease_id = NULL, lease_until = NULL
WHERE tenant_id = %(tenant_id)s AND task_id = %(task_id)s AND state = 'pending';

-- name: cancel-task
-- The task ends `cancelled` unless it already ended.
UPDATE batch_tasks
SET status = 'cancelled', completed_at = now()
WHERE tenant_id = %(tenant_id)s AND id = %(task_id)s AND completed_at IS NULL;

-- name: purge-finished-tasks
-- Delete up to `limit` tasks (their chunks go with them) that ended more than
-- the retention ago.
DELETE FROM batch_tasks
WHERE (tenant_id, id) IN (
    SELECT tenant_id, id FROM batch_tasks
    WHERE completed_at < now() - make_interval(days => %(retention_days)s)
    LIMIT %(limit)s);
