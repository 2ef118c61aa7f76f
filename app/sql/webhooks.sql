-- Statements of the workflow outbox (app/engine/outbox.py) and of the tenants'
-- webhook settings (app/engine/tenants.py).

-- name: insert-contact-events
-- One event per contact a runWorkflow batch wrote, in the batch's own
-- transaction and after its writes, so each event carries the contact as the
-- request left it (contact_json, schema.sql). Parallel arrays: contact ids, event types, and the changed
-- field names joined by commas (unnest would flatten an array of arrays).
-- The join on tenants writes nothing while the tenant has no enabled webhook:
-- there is nobody to tell.
INSERT INTO webhook_events (tenant_id, event_id, type, contact_id, contact, changed_fields)
SELECT c.tenant_id, 'msg_' || replace(gen_random_uuid()::text, '-', ''), r.type, c.id,
       contact_json(c), string_to_array(r.changed_fields, ',')
FROM unnest(%(contact_ids)b::bigint[], %(types)b::text[], %(changed_fields)b::text[])
     AS r (contact_id, type, changed_fields)
JOIN contacts AS c ON c.tenant_id = %(tenant_id)s AND c.id = r.contact_id
JOIN tenants AS t ON t.id = c.tenant_id AND t.webhook_enabled
ORDER BY c.id;

-- name: insert-task-event
-- A batch task ended: one event with the task, in the transaction of the
-- chunk that ended it, while the tenant's webhook is enabled.
INSERT INTO webhook_events (tenant_id, event_id, type, changed_fields, batch_task)
SELECT t.id, 'msg_' || replace(gen_random_uuid()::text, '-', ''), 'batch_task.completed',
       '{}', %(batch_task)s
FROM tenants AS t
WHERE t.id = %(tenant_id)s AND t.webhook_enabled;

-- name: claim-due-event
-- Claim the oldest due event of a tenant whose webhook is enabled, in one
-- short autocommit statement: SKIP LOCKED lets dispatchers claim side by side,
-- and the claim is a lease (next_attempt_at moves one lease ahead), not a
-- transaction held open across the delivery. The attempt is counted here, so
-- an event that kills its dispatcher still runs out of attempts.
WITH due AS (
    SELECT e.tenant_id, e.id
    FROM webhook_events AS e
    JOIN tenants AS t ON t.id = e.tenant_id
    WHERE e.status = 'pending' AND e.next_attempt_at <= now() AND t.webhook_enabled
    ORDER BY e.next_attempt_at, e.id
    LIMIT 1
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE webhook_events AS e
SET attempts = e.attempts + 1,
    next_attempt_at = now() + make_interval(secs => %(lease_seconds)s),
    lease_id = %(lease_id)s
FROM due, tenants AS t
WHERE e.tenant_id = due.tenant_id AND e.id = due.id AND t.id = due.tenant_id
RETURNING e.tenant_id, e.id, e.event_id, e.type, e.contact::text AS contact, e.changed_fields,
          e.batch_task::text AS batch_task,
          e.created_at, e.attempts, t.slug AS tenant_slug, t.webhook_url, t.webhook_secret;

-- name: mark-event-delivered
-- The receiver answered 2xx. Only the holder of the current lease records.
UPDATE webhook_events
SET status = 'delivered', finished_at = now(), lease_id = NULL, last_error = NULL
WHERE tenant_id = %(tenant_id)s AND id = %(id)s AND lease_id = %(lease_id)s;

-- name: reschedule-event
-- The attempt failed and the schedule has another: due again after the backoff.
UPDATE webhook_events
SET next_attempt_at = now() + make_interval(secs => %(retry_in_seconds)s),
    lease_id = NULL, last_error = %(error)s
WHERE tenant_id = %(tenant_id)s AND id = %(id)s AND lease_id = %(lease_id)s;

-- name: mark-event-dead
-- The last attempt of the schedule failed: kept for the operator, never sent again.
UPDATE webhook_events
SET status = 'dead', finished_at = now(), lease_id = NULL, last_error = %(error)s
WHERE tenant_id = %(tenant_id)s AND id = %(id)s AND lease_id = %(lease_id)s;

-- name: purge-finished-events
-- Delivered and dead events older than the retention, a bounded slice per
-- call so that one purge never holds many row locks or runs long.
DELETE FROM webhook_events
WHERE (tenant_id, id) IN (
    SELECT tenant_id, id
    FROM webhook_events
    WHERE status <> 'pending' AND finished_at < now() - make_interval(days => %(retention_days)s)
    LIMIT %(limit)s
);

-- name: count-events-by-tenant
-- `workflows status`: events per state for every tenant, or one (slug given).
SELECT t.slug, t.webhook_url, t.webhook_enabled,
       count(e.id) FILTER (WHERE e.status = 'pending') AS pending,
       count(e.id) FILTER (WHERE e.status = 'delivered') AS delivered,
       count(e.id) FILTER (WHERE e.status = 'dead') AS dead
FROM tenants AS t
LEFT JOIN webhook_events AS e ON e.tenant_id = t.id
WHERE %(slug)s::text IS NULL OR t.slug = %(slug)s::text
GROUP BY t.id
ORDER BY t.slug;

-- name: lock-tenant-webhook
-- `set-webhook` reads the settings it is about to change; the lock makes two
-- at once apply one after the other, so a printed secret is the stored one.
SELECT id, slug, webhook_url, webhook_secret, webhook_enabled
FROM tenants
WHERE slug = %(slug)s
FOR UPDATE;

-- name: update-tenant-webhook
-- Set a tenant's webhook; a NULL secret keeps the stored one.
UPDATE tenants
SET webhook_url = %(url)s,
    webhook_secret = coalesce(%(secret)s, webhook_secret),
    webhook_enabled = %(enabled)s
WHERE id = %(id)s;

-- name: park-pending-events
-- A disabled webhook's pending events wait at the far end of the due index,
-- so dispatchers do not step over them on every claim.
UPDATE webhook_events
SET next_attempt_at = 'infinity'
WHERE tenant_id = %(tenant_id)s AND status = 'pending' AND lease_id IS NULL;

-- name: unpark-pending-events
-- Enabled again: the parked events are due now, with the attempts they had left.
UPDATE webhook_events
SET next_attempt_at = now()
WHERE tenant_id = %(tenant_id)s AND status = 'pending' AND next_attempt_at = 'infinity';
