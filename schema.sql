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
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT contacts_tenant_external_id_key UNIQUE (tenant_id, external_id),
    CONSTRAINT contacts_tenant_email_key UNIQUE (tenant_id, email) DEFERRABLE INITIALLY IMMEDIATE,
    CONSTRAINT contacts_identity_check CHECK (external_id IS NOT NULL OR email IS NOT NULL)
);

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
-- timestamps in UTC with microseconds and a Z. One definition for all the
-- statements that return contacts, so reads and events cannot drift apart.
-- json (not jsonb) keeps the keys in this order.
CREATE OR REPLACE FUNCTION contact_json(c contacts) RETURNS json
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT json_build_object(
        'id', c.id, 'externalId', c.external_id, 'email', c.email,
        'firstName', c.first_name, 'lastName', c.last_name, 'phone', c.phone,
        'locale', c.locale, 'optIn', c.opt_in, 'attributes', c.attributes,
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
