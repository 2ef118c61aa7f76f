-- Statements on tenants and their API tokens (app/engine/tenants.py, app/engine/tokens.py).

-- name: insert-tenant
-- `tenants create` and the demo tenant; a slug already taken is a unique violation.
INSERT INTO tenants (slug, name)
VALUES (%(slug)s, %(name)s)
RETURNING id, slug, name;

-- name: select-tenant-by-slug
-- Operators name tenants by slug; the unique index on it is a global look-up.
SELECT id, slug, name FROM tenants WHERE slug = %(slug)s;

-- name: count-tenants
-- `serve` creates the demo tenant only on a database that has none yet.
SELECT count(*) AS n FROM tenants;

-- name: insert-token
-- Only the hash and the display prefix are stored, never the token itself.
INSERT INTO api_tokens (tenant_id, prefix, token_hash, scopes)
VALUES (%(tenant_id)s, %(prefix)s, %(token_hash)s, %(scopes)s)
RETURNING id, prefix, scopes, created_at;

-- name: select-token-by-hash
-- The request path's only token look-up: one index probe on the hash, joined
-- to the tenant so the caller learns the slug for the X-Tenant-Id check.
-- needs_touch says whether touch-token has anything to do (same rule).
SELECT t.id, t.tenant_id, t.token_hash, t.scopes, t.revoked_at,
       n.slug AS tenant_slug,
       (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute') AS needs_touch
FROM api_tokens AS t
JOIN tenants AS n ON n.id = t.tenant_id
WHERE t.token_hash = %(token_hash)s;

-- name: touch-token
-- Record use at most once a minute per token: a write on every request would
-- turn every read into a write and serialise requests on the token row.
UPDATE api_tokens
SET last_used_at = now()
WHERE tenant_id = %(tenant_id)s AND id = %(id)s
  AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute');

-- name: list-tokens
-- `tokens list`: prefixes, scopes and dates; never the hash.
SELECT t.prefix, t.scopes, t.created_at, t.last_used_at, t.revoked_at
FROM api_tokens AS t
WHERE t.tenant_id = %(tenant_id)s
ORDER BY t.id;

-- name: revoke-tokens-by-prefix
-- `tokens revoke PREFIX`, an operator's command. No tenant_id: the prefix is
-- the token's own handle, like its hash a global look-up (api_tokens_prefix_idx),
-- and the operator copies it from `tokens list`, which is per tenant. Two
-- tokens sharing a prefix (8 random characters) are both revoked, the safe way.
UPDATE api_tokens
SET revoked_at = now()
WHERE prefix = %(prefix)s AND revoked_at IS NULL
RETURNING prefix;
