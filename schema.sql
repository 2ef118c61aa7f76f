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
