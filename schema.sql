-- contactsync schema. Idempotent: every statement may run again on a live
-- database (`flask --app app init-db`). It never drops anything.
--
-- Every primary key and unique index of a tenant-owned table starts with
-- tenant_id, so the schema can be distributed by tenant (Citus) later.

-- One customer of contactsync. Every other row belongs to exactly one tenant.
-- slug is what people type (CLI, X-Tenant-Id header); id is what rows carry.
CREATE TABLE IF NOT EXISTS tenants (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug           text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name           text NOT NULL,
    webhook_url    text,
    webhook_secret text,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Bearer tokens. Only the SHA-256 of a token is stored, never the token;
-- prefix is a short, non-secret handle for listing and revoking.
-- token_hash is a global look-up (the token names its tenant), so its unique
-- index does not start with tenant_id.
CREATE TABLE IF NOT EXISTS api_tokens (
    tenant_id    bigint NOT NULL REFERENCES tenants (id),
    id           bigint GENERATED ALWAYS AS IDENTITY,
    prefix       text NOT NULL,
    token_hash   bytea NOT NULL UNIQUE,
    scopes       text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS api_tokens_prefix_idx ON api_tokens (prefix);

-- The contact store. email is stored already normalised and lower-cased, so
-- the plain unique index enforces case-insensitive uniqueness on every code
-- path and in every race. A contact always keeps at least one identity.
-- The email constraint is DEFERRABLE INITIALLY IMMEDIATE so that it is checked
-- at the end of each statement rather than row by row: one batch may pass an
-- email from one contact to another (even in a cycle), and a single UPDATE
-- must be able to write that. It is still checked before the statement ends.
CREATE TABLE IF NOT EXISTS contacts (
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    id          bigint GENERATED ALWAYS AS IDENTITY,
    external_id text,
    email       text,
    first_name  text,
    last_name   text,
    phone       text,
    locale      text,
    opt_in      boolean,
    attributes  jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    username    text,
    name        text,
    status      text NOT NULL DEFAULT 'auto',
    owner_id    text,
    avatar_url  text,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT contacts_tenant_external_id_key UNIQUE (tenant_id, external_id),
    CONSTRAINT contacts_tenant_email_key UNIQUE (tenant_id, email) DEFERRABLE INITIALLY IMMEDIATE,
    CONSTRAINT contacts_tenant_username_key UNIQUE (tenant_id, username) DEFERRABLE INITIALLY IMMEDIATE,
    CONSTRAINT contacts_status_check CHECK (status IN ('auto', 'optout', 'spam')),
    CONSTRAINT contacts_identities_check
        CHECK (external_id IS NOT NULL OR email IS NOT NULL OR username IS NOT NULL)
);

-- The whole contact (DESIGN 8), for a database made before it: the columns
-- and constraints above, added in place (a new database has them already).
-- username is a third identity, stored trimmed and lower-cased like email,
-- unique per tenant and checked at the end of each statement for the same
-- reason as email (one batch may pass it from one contact to another).
-- status is Inrō's (auto, optout, spam), independent of opt_in.
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS username   text;
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS name       text;
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS status     text NOT NULL DEFAULT 'auto';
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS owner_id   text;
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS avatar_url text;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'contacts_tenant_username_key') THEN
        ALTER TABLE contacts ADD CONSTRAINT contacts_tenant_username_key
            UNIQUE (tenant_id, username) DEFERRABLE INITIALLY IMMEDIATE;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'contacts_status_check') THEN
        ALTER TABLE contacts ADD CONSTRAINT contacts_status_check
            CHECK (status IN ('auto', 'optout', 'spam'));
    END IF;
    -- A contact keeps at least one of its three identities. This replaces the
    -- two-identity check of the first schema: the one thing schema.sql drops
    -- is that constraint, loosened; never data.
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'contacts_identities_check') THEN
        ALTER TABLE contacts ADD CONSTRAINT contacts_identities_check
            CHECK (external_id IS NOT NULL OR email IS NOT NULL OR username IS NOT NULL);
        ALTER TABLE contacts DROP CONSTRAINT IF EXISTS contacts_identity_check;
    END IF;
END
$$;

-- The tenant's catalogues of tags and folders (DESIGN 8): a name is unique
-- per tenant compared case-insensitively, and keeps the case it was created
-- with. Rows name them; the engine creates a name added that is new.
CREATE TABLE IF NOT EXISTS tags (
    tenant_id  bigint NOT NULL REFERENCES tenants (id),
    id         bigint GENERATED ALWAYS AS IDENTITY,
    name       text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX IF NOT EXISTS tags_tenant_name_key ON tags (tenant_id, lower(name));

CREATE TABLE IF NOT EXISTS folders (
    tenant_id  bigint NOT NULL REFERENCES tenants (id),
    id         bigint GENERATED ALWAYS AS IDENTITY,
    name       text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX IF NOT EXISTS folders_tenant_name_key ON folders (tenant_id, lower(name));

-- The tenant's companies, keyed by the client's own company_id (Intercom's
-- company_id, the native companyId); name is the last one a row sent.
CREATE TABLE IF NOT EXISTS companies (
    tenant_id  bigint NOT NULL REFERENCES tenants (id),
    id         bigint GENERATED ALWAYS AS IDENTITY,
    company_id text NOT NULL CHECK (char_length(company_id) BETWEEN 1 AND 255),
    name       text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT companies_tenant_company_id_key UNIQUE (tenant_id, company_id)
);

-- Which contact has which tag, folder and company. Both foreign keys carry
-- tenant_id, so no link can join a contact to another tenant's entry. The
-- second index serves "who has this tag" and the catalogue's foreign key.
CREATE TABLE IF NOT EXISTS contact_tags (
    tenant_id  bigint NOT NULL,
    contact_id bigint NOT NULL,
    tag_id     bigint NOT NULL,
    PRIMARY KEY (tenant_id, contact_id, tag_id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, tag_id) REFERENCES tags (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS contact_tags_tag_idx ON contact_tags (tenant_id, tag_id);

CREATE TABLE IF NOT EXISTS contact_folders (
    tenant_id  bigint NOT NULL,
    contact_id bigint NOT NULL,
    folder_id  bigint NOT NULL,
    PRIMARY KEY (tenant_id, contact_id, folder_id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, folder_id) REFERENCES folders (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS contact_folders_folder_idx ON contact_folders (tenant_id, folder_id);

CREATE TABLE IF NOT EXISTS contact_companies (
    tenant_id  bigint NOT NULL,
    contact_id bigint NOT NULL,
    company_id bigint NOT NULL,
    PRIMARY KEY (tenant_id, contact_id, company_id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES contacts (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, company_id) REFERENCES companies (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS contact_companies_company_idx ON contact_companies (tenant_id, company_id);

-- The change feed's order (GET /contacts?updatedSince=...): the id of the
-- transaction that last wrote the row. Every contactsync write sets it (the
-- default on insert, update-contacts on update). A reader returns only rows
-- whose transaction is older than its snapshot's xmin, the oldest one still
-- running: rows a transaction commits late then still appear after
-- everything the reader has seen, never behind its cursor. xid8 is 64 bits
-- and never wraps around.
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS change_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX IF NOT EXISTS contacts_tenant_change_idx ON contacts (tenant_id, change_xid, id);

-- The contact as every read and every webhook event shows it: camelCase,
-- timestamps in UTC with microseconds and a Z, its tags, folders and
-- companies sorted by id (empty lists when none). One definition for all the
-- statements that return contacts, so reads and events cannot drift apart.
-- json (not jsonb) keeps the keys in this order.
-- The stale-write guard (DESIGN 15): the time the source system last changed
-- the contact, as the last row that carried sourceUpdatedAt said. A row
-- older than it is not applied.
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS source_updated_at timestamptz;

CREATE OR REPLACE FUNCTION contact_json(c contacts) RETURNS json
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT json_build_object(
        'id', c.id, 'externalId', c.external_id, 'email', c.email, 'username', c.username,
        'firstName', c.first_name, 'lastName', c.last_name, 'name', c.name, 'phone', c.phone,
        'locale', c.locale, 'optIn', c.opt_in, 'status', c.status, 'ownerId', c.owner_id,
        'avatarUrl', c.avatar_url, 'attributes', c.attributes,
        'sourceUpdatedAt', to_char(c.source_updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'tags', (SELECT coalesce(json_agg(json_build_object('id', t.id, 'name', t.name) ORDER BY t.id), '[]')
                 FROM contact_tags AS l JOIN tags AS t ON t.tenant_id = l.tenant_id AND t.id = l.tag_id
                 WHERE l.tenant_id = c.tenant_id AND l.contact_id = c.id),
        'folders', (SELECT coalesce(json_agg(json_build_object('id', f.id, 'name', f.name) ORDER BY f.id), '[]')
                    FROM contact_folders AS l JOIN folders AS f ON f.tenant_id = l.tenant_id AND f.id = l.folder_id
                    WHERE l.tenant_id = c.tenant_id AND l.contact_id = c.id),
        'companies', (SELECT coalesce(json_agg(json_build_object('companyId', o.company_id, 'name', o.name)
                                               ORDER BY o.id), '[]')
                      FROM contact_companies AS l
                      JOIN companies AS o ON o.tenant_id = l.tenant_id AND o.id = l.company_id
                      WHERE l.tenant_id = c.tenant_id AND l.contact_id = c.id),
        'createdAt', to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'updatedAt', to_char(c.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
$$;

-- Whether the tenant's webhook (webhook_url, signed with webhook_secret)
-- receives workflow events. `tenants set-webhook --disable` turns it off
-- without forgetting the URL or the secret.
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS webhook_enabled boolean NOT NULL DEFAULT false;

-- The workflow outbox: one row per contact a runWorkflow request created or
-- updated, written in that request's transaction, so an event exists exactly
-- when its change was committed. Dispatchers (`workflows run`) deliver them.
-- event_id is the webhook-id receivers deduplicate on; contact is the contact
-- as the request left it, kept as json (not jsonb) so its keys keep their
-- documented order. A pending event is due at next_attempt_at; claiming it
-- pushes next_attempt_at one lease ahead, so an event whose dispatcher died
-- becomes due again by itself. lease_id names the claim, so a dispatcher
-- whose lease ran out cannot record over a newer claim.
CREATE TABLE IF NOT EXISTS webhook_events (
    tenant_id       bigint NOT NULL REFERENCES tenants (id),
    id              bigint GENERATED ALWAYS AS IDENTITY,
    event_id        text NOT NULL,
    type            text NOT NULL CHECK (type IN ('contact.created', 'contact.updated')),
    contact_id      bigint NOT NULL,
    contact         json NOT NULL,
    changed_fields  text[] NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_id        uuid,
    last_error      text,
    finished_at     timestamptz,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT webhook_events_tenant_event_id_key UNIQUE (tenant_id, event_id)
);
-- What dispatchers scan for: pending events by due time. Not unique, so it
-- need not start with tenant_id.
CREATE INDEX IF NOT EXISTS webhook_events_due_idx
    ON webhook_events (next_attempt_at) WHERE status = 'pending';
-- What the purge scans for: finished events by age.
CREATE INDEX IF NOT EXISTS webhook_events_finished_idx
    ON webhook_events (finished_at) WHERE status <> 'pending';

-- Idempotency-Key answers: the first answer a write gave under a key, kept
-- until expires_at (CONTACTSYNC_IDEMPOTENCY_TTL) and written in that write's
-- transaction. fingerprint is the SHA-256 of method, path and body bytes, so
-- the same key with another request is told apart; body is the answer's
-- bytes, replayed as they were.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    key         text NOT NULL,
    fingerprint bytea NOT NULL,
    status      smallint NOT NULL,
    body        bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_expires_idx ON idempotency_keys (expires_at);

-- Batch tasks (DESIGN 10): a write accepted now and applied in the
-- background. The submitting request stores the task and its chunks in its
-- own transaction; workers (`tasks run`) apply one chunk per transaction, and
-- that transaction also adds the chunk's outcomes to the counters here, so
-- the counters always equal the results stored. kind names the door whose
-- rows the chunks hold: the native row format, or Inrō's resolved updates.
CREATE TABLE IF NOT EXISTS batch_tasks (
    tenant_id       bigint NOT NULL REFERENCES tenants (id),
    id              bigint GENERATED ALWAYS AS IDENTITY,
    kind            text NOT NULL CHECK (kind IN ('contacts.bulk_update', 'inro.contacts.bulk')),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN (
                        'pending', 'running', 'completed', 'completed_with_errors', 'cancelled', 'failed')),
    run_workflow    boolean NOT NULL DEFAULT false,
    total_count     integer NOT NULL CHECK (total_count >= 0),
    processed_count integer NOT NULL DEFAULT 0,
    created_count   integer NOT NULL DEFAULT 0,
    updated_count   integer NOT NULL DEFAULT 0,
    unchanged_count integer NOT NULL DEFAULT 0,
    failed_count    integer NOT NULL DEFAULT 0,
    stale_count     integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    completed_at    timestamptz,
    PRIMARY KEY (tenant_id, id)
);
-- What the purge scans for: finished tasks by age.
CREATE INDEX IF NOT EXISTS batch_tasks_finished_idx
    ON batch_tasks (completed_at) WHERE completed_at IS NOT NULL;

-- A task's rows, about 500 per chunk, in the order they were sent. position
-- is the submission order across all tasks: a worker only claims the
-- tenant's oldest pending chunk, so a tenant's chunks apply in that order.
-- rows is the rows exactly as sent, as JSON text escaped to ASCII (text, not
-- json: a row the worker will refuse, with a lone surrogate or a number too
-- large for a float, must still be stored to be reported); the worker parses
-- it as the synchronous door parses a body. It is emptied once applied,
-- and results then holds one outcome per row. prepared is the rows as
-- validation left them, written ahead by an idle worker while the tenant's
-- earlier chunk is applied (validation depends on no earlier row), so the
-- ordered part of the work is only planning and writing. A claim is a lease (lease_id
-- until lease_until, counted in attempts); the applying transaction holds
-- the chunk's row lock and checks the lease, so a chunk is applied once.
CREATE TABLE IF NOT EXISTS batch_task_chunks (
    tenant_id   bigint NOT NULL,
    task_id     bigint NOT NULL,
    seq         integer NOT NULL,
    position    bigint GENERATED ALWAYS AS IDENTITY,
    first_index integer NOT NULL,
    row_count   integer NOT NULL,
    state       text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'skipped')),
    rows        text,
    prepared    json,
    results     json,
    lease_id    uuid,
    lease_until timestamptz,
    attempts    integer NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, task_id, seq),
    FOREIGN KEY (tenant_id, task_id) REFERENCES batch_tasks (tenant_id, id) ON DELETE CASCADE
);
-- What workers scan for: each tenant's pending chunks in submission order.
CREATE INDEX IF NOT EXISTS batch_task_chunks_pending_idx
    ON batch_task_chunks (tenant_id, position) WHERE state = 'pending';

-- A batch task's end is an event too (`batch_task.completed`, DESIGN 10):
-- such an event carries the task in batch_task and has no contact. A
-- contact.deleted event (DESIGN 9) carries the contact's tombstone as contact.
ALTER TABLE webhook_events ADD COLUMN IF NOT EXISTS batch_task json;
ALTER TABLE webhook_events ALTER COLUMN contact_id DROP NOT NULL;
ALTER TABLE webhook_events ALTER COLUMN contact DROP NOT NULL;
ALTER TABLE webhook_events DROP CONSTRAINT IF EXISTS webhook_events_type_check;
ALTER TABLE webhook_events ADD CONSTRAINT webhook_events_type_check
    CHECK (type IN ('contact.created', 'contact.updated', 'contact.deleted', 'batch_task.completed'));

-- Erasure (DESIGN 9). A deleted contact's row, links and webhook events go
-- in the deleting transaction; what remains is its tombstone, which holds no
-- personal data: the id, the externalId (the client's own key, so that a
-- mirror can find its copy) and when. change_xid puts it in the change feed
-- at the deleting transaction's position, exactly as a contact's row sits
-- there, so a feed reader sees deletions in order with every other change.
-- A contact id is never used again, so a tombstone and a contact never share
-- a feed position. Tombstones are purged after
-- CONTACTSYNC_TOMBSTONE_RETENTION_DAYS by the dispatcher's upkeep.
CREATE TABLE IF NOT EXISTS contact_tombstones (
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    contact_id  bigint NOT NULL,
    external_id text,
    deleted_at  timestamptz NOT NULL DEFAULT now(),
    change_xid  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (tenant_id, contact_id)
);
CREATE INDEX IF NOT EXISTS contact_tombstones_tenant_change_idx
    ON contact_tombstones (tenant_id, change_xid, contact_id);
-- What the purge scans for: tombstones by age.
CREATE INDEX IF NOT EXISTS contact_tombstones_deleted_idx ON contact_tombstones (deleted_at);

-- The newest tombstone purged for each tenant, as a feed position and a
-- time: a cursor before it, or an updatedSince before that time, would miss
-- a deletion, so the feed answers 410 cursor_expired instead of a silent gap.
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS tombstones_purged_xid xid8;
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS tombstones_purged_id bigint;
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS tombstones_purged_deleted_at timestamptz;

-- Erasure finds a deleted contact's webhook events by contact.
CREATE INDEX IF NOT EXISTS webhook_events_contact_idx ON webhook_events (tenant_id, contact_id);

-- A tombstone as the feed and contact.deleted events show it.
CREATE OR REPLACE FUNCTION tombstone_json(t contact_tombstones) RETURNS json
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT json_build_object(
        'id', t.contact_id, 'externalId', t.external_id, 'deleted', true,
        'deletedAt', to_char(t.deleted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
$$;

-- Which contacts a stored answer speaks of: 'id:17', 'email:a@b.c',
-- 'externalId:crm-1', 'username:jane', for every contact id and identity
-- the answer carries (a contact, a failure's echo of what was sent); for a
-- pending chunk, what its rows name. Erasing a contact blanks, in the same
-- transaction, every Idempotency-Key answer and batch task outcome that
-- names it and drops the pending rows that do, so nothing the service keeps
-- holds its email after it is gone.
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS mentions text[] NOT NULL DEFAULT '{}';
CREATE INDEX IF NOT EXISTS idempotency_keys_mentions_idx ON idempotency_keys USING gin (mentions);
ALTER TABLE batch_task_chunks ADD COLUMN IF NOT EXISTS mentions text[] NOT NULL DEFAULT '{}';
CREATE INDEX IF NOT EXISTS batch_task_chunks_mentions_idx ON batch_task_chunks USING gin (mentions);

-- Jobs (Intercom's door, DESIGN 12): a job groups batch tasks, one per
-- request; `"job": {"id": ...}` in a later request appends a task to it while
-- it is open. closed_at is set, once, by the transaction that finishes the
-- job's last unfinished task (it locks the job row first), and an append
-- locks the same row and requires closed_at IS NULL: so a job that a reader
-- saw finished can never reopen, and an append racing the last task either
-- comes first (the job goes on) or is refused (403).
CREATE TABLE IF NOT EXISTS batch_jobs (
    tenant_id  bigint NOT NULL REFERENCES tenants (id),
    id         bigint GENERATED ALWAYS AS IDENTITY,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    closed_at  timestamptz,
    PRIMARY KEY (tenant_id, id)
);
-- What the purge scans for: closed jobs by age.
CREATE INDEX IF NOT EXISTS batch_jobs_closed_idx ON batch_jobs (closed_at) WHERE closed_at IS NOT NULL;

-- A task's job (null for a task of another door); the job's tasks go with it.
ALTER TABLE batch_tasks ADD COLUMN IF NOT EXISTS job_id bigint;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'batch_tasks_job_fkey') THEN
        ALTER TABLE batch_tasks ADD CONSTRAINT batch_tasks_job_fkey
            FOREIGN KEY (tenant_id, job_id) REFERENCES batch_jobs (tenant_id, id) ON DELETE CASCADE;
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS batch_tasks_job_idx ON batch_tasks (tenant_id, job_id) WHERE job_id IS NOT NULL;

-- Intercom's rows (updates by id, strict creates, deletes by id) are a third
-- kind of task.
ALTER TABLE batch_tasks DROP CONSTRAINT IF EXISTS batch_tasks_kind_check;
ALTER TABLE batch_tasks ADD CONSTRAINT batch_tasks_kind_check
    CHECK (kind IN ('contacts.bulk_update', 'inro.contacts.bulk', 'intercom.contacts.bulk'));

-- A pending chunk's rows that named a contact erased before they were
-- applied (DESIGN 9): replaced by null in rows, their indexes kept here, and
-- reported as failed (contact_erased) when the chunk applies, so a queued
-- write cannot bring back, or keep, what was erased.
ALTER TABLE batch_task_chunks ADD COLUMN IF NOT EXISTS erased_indexes integer[] NOT NULL DEFAULT '{}';

-- Rows of Intercom's bulk delete that erased their contact.
ALTER TABLE batch_tasks ADD COLUMN IF NOT EXISTS deleted_count integer NOT NULL DEFAULT 0;
