-- Jobs (Intercom's door, DESIGN 12): a job groups the batch tasks of its requests.

-- name: insert-job
-- A new job, in the transaction of the request that submits its first task.
INSERT INTO batch_jobs (tenant_id)
VALUES (%(tenant_id)s)
RETURNING id;

-- name: lock-open-job
-- Appending a task: lock the job, if it is the tenant's and still open. The
-- row lock is the one the closing transaction takes first (lock-job-of-task),
-- so the two are serialised: if the closing one commits first, this UPDATE
-- re-reads the row, finds closed_at set and returns nothing (403); if this
-- one commits first, the closer sees the appended task and leaves the job open.
UPDATE batch_jobs
SET updated_at = now()
WHERE tenant_id = %(tenant_id)s AND id = %(job_id)s AND closed_at IS NULL
RETURNING id;

-- name: select-job-closed
-- Why a job could not be appended to: it exists and is closed (a row), or it
-- is not the tenant's (none).
SELECT closed_at
FROM batch_jobs
WHERE tenant_id = %(tenant_id)s AND id = %(job_id)s;

-- name: lock-job-of-task
-- A task just ended (its last chunk, or a cancel): lock its job, if it has
-- one, before looking at the job's other tasks. Locked in a statement of its
-- own, so that the next statement's snapshot sees every task appended by a
-- transaction that held the lock before us.
SELECT j.id
FROM batch_tasks AS t
JOIN batch_jobs AS j ON j.tenant_id = t.tenant_id AND j.id = t.job_id
WHERE t.tenant_id = %(tenant_id)s AND t.id = %(task_id)s
FOR UPDATE OF j;

-- name: close-finished-job
-- Close the (locked) job once none of its tasks is unfinished; a closed job
-- stays closed, and takes no task any more.
UPDATE batch_jobs AS j
SET closed_at = now(), updated_at = now()
WHERE j.tenant_id = %(tenant_id)s AND j.id = %(job_id)s AND j.closed_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM batch_tasks AS t
                  WHERE t.tenant_id = j.tenant_id AND t.job_id = j.id AND t.completed_at IS NULL);

-- name: select-job-tasks
-- A job and its tasks in the order they were appended (one row per task; a
-- job always has one task at least, unless its tasks were purged).
SELECT j.id, j.created_at, j.updated_at, j.closed_at,
       t.id AS task_id, t.status, t.total_count, t.created_at AS task_created_at,
       t.started_at, t.completed_at
FROM batch_jobs AS j
LEFT JOIN batch_tasks AS t ON t.tenant_id = j.tenant_id AND t.job_id = j.id
WHERE j.tenant_id = %(tenant_id)s AND j.id = %(job_id)s
ORDER BY t.id;

-- name: purge-closed-jobs
-- Delete up to `limit` jobs (their tasks go with them) closed more than the
-- retention ago.
DELETE FROM batch_jobs
WHERE (tenant_id, id) IN (
    SELECT tenant_id, id FROM batch_jobs
    WHERE closed_at < now() - make_interval(days => %(retention_days)s)
    LIMIT %(limit)s);
