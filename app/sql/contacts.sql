-- Statements of the bulk upsert engine (app/engine/upsert.py). Parallel arrays are
-- unnested into rows so a batch of any size costs a fixed number of
-- statements.

-- name: select-contacts-by-keys
-- Read every stored contact that the batch's ids (updates by id), externalIds,
-- emails or usernames can reach, with its row version (xmin) and its links
-- as [catalogue id, key] pairs: for a batch where some row changes tags,
-- folders or companies. No lock here: a re-sync of unchanged contacts then
-- costs no lock writes at all; lock-contacts-by-ids locks only what the batch
-- will change. The columns come in the order of the engine's Contact
-- (STORED_COLUMNS), then the links; attributes as text, which the engine
-- parses for all rows at once.
SELECT c.id, c.xmin::text AS version, c.external_id, c.email, c.username, c.first_name,
       c.last_name, c.name, c.phone, c.locale, c.opt_in, c.status, c.owner_id, c.avatar_url,
       c.attributes::text AS attributes,
       to_char(c.source_updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS source_updated_at,
       (SELECT json_agg(json_build_array(t.id, t.name))
        FROM contact_tags AS l JOIN tags AS t ON t.tenant_id = l.tenant_id AND t.id = l.tag_id
        WHERE l.tenant_id = c.tenant_id AND l.contact_id = c.id) AS tags,
       (SELECT json_agg(json_build_array(f.id, f.name))
        FROM contact_folders AS l JOIN folders AS f ON f.tenant_id = l.tenant_id AND f.id = l.folder_id
        WHERE l.tenant_id = c.tenant_id AND l.contact_id = c.id) AS folders,
       (SELECT json_agg(json_build_array(o.id, o.company_id))
        FROM contact_companies AS l JOIN companies AS o ON o.tenant_id = l.tenant_id AND o.id = l.company_id
        WHERE l.tenant_id = c.tenant_id AND l.contact_id = c.id) AS companies
FROM contacts AS c
WHERE c.tenant_id = %(tenant_id)s
  AND (c.id = ANY(%(ids)b::bigint[]) OR c.external_id = ANY(%(external_ids)b::text[])
       OR c.email = ANY(%(emails)b::text[]) OR c.username = ANY(%(usernames)b::text[]));

-- name: select-contacts-by-keys-plain
-- select-contacts-by-keys for a batch whose rows change no tags, folders or
-- companies: the same contacts without their links, which it neither reads
-- nor writes. A narrower answer, and no link structures built in Python:
-- the common batch (and every re-sync) pays for no relation.
SELECT c.id, c.xmin::text AS version, c.external_id, c.email, c.username, c.first_name,
       c.last_name, c.name, c.phone, c.locale, c.opt_in, c.status, c.owner_id, c.avatar_url,
       c.attributes::text AS attributes,
       to_char(c.source_updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS source_updated_at
FROM contacts AS c
WHERE c.tenant_id = %(tenant_id)s
  AND (c.id = ANY(%(ids)b::bigint[]) OR c.external_id = ANY(%(external_ids)b::text[])
       OR c.email = ANY(%(emails)b::text[]) OR c.username = ANY(%(usernames)b::text[]));

-- name: select-known-emails
-- Which of these lower-cased addresses the tenant's contacts already hold:
-- validation skips email-validator for them (app/schemas/contacts.py, KNOWN_ADDRESSES).
-- For a task worker validating a chunk ahead of its write; a bulk request
-- learns them from its contact read instead (app/engine/bulk.py).
SELECT email
FROM contacts
WHERE tenant_id = %(tenant_id)s AND email = ANY(%(emails)b::text[]);

-- name: lock-tenant-writes-shared
-- Every batch that writes holds its tenant's write lock in shared mode until
-- it commits, so batches of one tenant still write side by side.
SELECT pg_advisory_xact_lock_shared(hashtextextended('contactsync.contacts', %(tenant_id)s::bigint));

-- name: lock-tenant-writes-exclusive
-- A retry after contention takes the same lock exclusively before it reads:
-- it waits for the tenant's writing batches to commit and holds new ones off
-- until it commits, so nothing can insert or change what it read and the
-- retry cannot fail the same way again.
SELECT pg_advisory_xact_lock(hashtextextended('contactsync.contacts', %(tenant_id)s::bigint));

-- name: lock-contacts-by-ids
-- Lock the contacts the batch will update and return their current versions.
-- ORDER BY id sits below the row locks, so locks are taken in id order and two
-- batches over the same contacts queue instead of deadlocking. A version that
-- differs from the one read means another transaction changed the row in
-- between: the engine then starts the transaction again.
SELECT id, xmin::text AS version
FROM contacts
WHERE tenant_id = %(tenant_id)s AND id = ANY(%(ids)b::bigint[])
ORDER BY id
FOR UPDATE;

-- name: update-contacts
-- Write the final state of every changed, existing contact in one statement.
-- The attributes come as one JSON array, in the order of the other arrays:
-- one document costs the engine a third of what a jsonb per row does.
-- Emails and usernames may move between these rows; their constraints are
-- checked at the end of the statement (schema.sql), so the order of the rows
-- does not matter. A change of links only updates the row too: it moves the
-- contact in the feed and its version, which concurrent batches check.
UPDATE contacts AS c
SET external_id = r.external_id,
    email       = r.email,
    username    = r.username,
    first_name  = r.first_name,
    last_name   = r.last_name,
    name        = r.name,
    phone       = r.phone,
    locale      = r.locale,
    opt_in      = r.opt_in,
    status      = r.status,
    owner_id    = r.owner_id,
    avatar_url  = r.avatar_url,
    attributes  = r.attributes,
    source_updated_at = r.source_updated_at::timestamptz,
    updated_at  = now(),
    change_xid  = pg_current_xact_id()
FROM unnest(%(ids)b::bigint[], %(external_ids)b::text[], %(emails)b::text[], %(usernames)b::text[],
            %(first_names)b::text[], %(last_names)b::text[], %(names)b::text[], %(phones)b::text[],
            %(locales)b::text[], %(opt_ins)b::boolean[], %(statuses)b::text[], %(owner_ids)b::text[],
            %(avatar_urls)b::text[],
            ARRAY(SELECT a.value FROM jsonb_array_elements(%(attributes)s::jsonb) WITH ORDINALITY AS a (value, ord)
                  ORDER BY a.ord),
            %(source_updated_ats)b::text[])
     AS r (id, external_id, email, username, first_name, last_name, name, phone, locale, opt_in,
           status, owner_id, avatar_url, attributes, source_updated_at)
WHERE c.tenant_id = %(tenant_id)s AND c.id = r.id;

-- name: insert-contacts
-- Create every new contact of the batch in one statement, in the order of the
-- arrays (the engine sorts them by key, so concurrent batches insert the same
-- keys in the same order). RETURNING gives the ids back with the identities,
-- by which the engine finds each contact's id.
INSERT INTO contacts (tenant_id, external_id, email, username, first_name, last_name, name,
                      phone, locale, opt_in, status, owner_id, avatar_url, attributes,
                      source_updated_at)
SELECT %(tenant_id)s, r.external_id, r.email, r.username, r.first_name, r.last_name, r.name,
       r.phone, r.locale, r.opt_in, r.status, r.owner_id, r.avatar_url, r.attributes,
       r.source_updated_at::timestamptz
FROM unnest(%(external_ids)b::text[], %(emails)b::text[], %(usernames)b::text[],
            %(first_names)b::text[], %(last_names)b::text[], %(names)b::text[], %(phones)b::text[],
            %(locales)b::text[], %(opt_ins)b::boolean[], %(statuses)b::text[], %(owner_ids)b::text[],
            %(avatar_urls)b::text[],
            ARRAY(SELECT a.value FROM jsonb_array_elements(%(attributes)s::jsonb) WITH ORDINALITY AS a (value, ord)
                  ORDER BY a.ord),
            %(source_updated_ats)b::text[])
     WITH ORDINALITY AS r (external_id, email, username, first_name, last_name, name, phone,
                           locale, opt_in, status, owner_id, avatar_url, attributes,
                           source_updated_at, ord)
ORDER BY r.ord
RETURNING id, external_id, email, username;

-- name: select-contact-by-id
-- GET /contacts/{id}, and a write door's read-back of the contact it wrote.
SELECT contact_json(c) AS contact
FROM contacts AS c
WHERE c.tenant_id = %(tenant_id)s AND c.id = %(id)s;

-- name: select-contact-by-email
-- email as stored: normalised and lower-cased by the caller, like on write.
SELECT contact_json(c) AS contact
FROM contacts AS c
WHERE c.tenant_id = %(tenant_id)s AND c.email = %(email)s;

-- name: select-contact-by-external-id
-- GET /contacts?externalId=: externalId as stored (trimmed by the caller, like on write).
SELECT contact_json(c) AS contact
FROM contacts AS c
WHERE c.tenant_id = %(tenant_id)s AND c.external_id = %(external_id)s;

-- name: select-contact-by-username
-- GET /contacts?username=: username as stored (trimmed and lower-cased by the caller).
SELECT contact_json(c) AS contact
FROM contacts AS c
WHERE c.tenant_id = %(tenant_id)s AND c.username = %(username)s;

-- name: select-contact-changes
-- One page of the change feed: contacts and tombstones (DESIGN 9) after the
-- cursor's position in (change_xid, id) order, each on its tenant feed
-- index. Only rows written by transactions older than this statement's
-- snapshot xmin (the horizon) are returned: every transaction still running,
-- or starting later, has a larger id, so whatever it writes lands after this
-- page's end and a cursor never skips a row that commits late. The horizon
-- comes back on every row, and on one row of NULLs when the page is empty,
-- so that a reader who has seen all there is can move its cursor up to it
-- rather than scan the same rows again; so does the newest tombstone purged,
-- which a cursor must not be older than (app/engine/reads.py).
-- updatedSince filters with 5 minutes of slack: updated_at is when the writing
-- transaction started, and one that started just before updatedSince may
-- commit after it (at least once allows the few extra rows).
WITH horizon AS (
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin, t.tombstones_purged_xid::text AS purged_xid,
           t.tombstones_purged_id AS purged_id, t.tombstones_purged_deleted_at AS purged_deleted_at
    FROM tenants AS t
    WHERE t.id = %(tenant_id)s
)
SELECT h.xmin::text AS horizon, h.purged_xid, h.purged_id, h.purged_deleted_at,
       page.contact, page.change_xid::text AS change_xid, page.id
FROM horizon AS h
LEFT JOIN LATERAL (
    (SELECT contact_json(c) AS contact, c.change_xid, c.id
     FROM contacts AS c
     WHERE c.tenant_id = %(tenant_id)s
       AND (c.tenant_id, c.change_xid, c.id) > (%(tenant_id)s, %(after_xid)s::xid8, %(after_id)s::bigint)
       AND c.change_xid < h.xmin
       AND (%(since)s::timestamptz IS NULL
            OR c.updated_at >= %(since)s::timestamptz - interval '5 minutes')
     ORDER BY c.change_xid, c.id
     LIMIT %(limit)s)
    UNION ALL
    (SELECT tombstone_json(d), d.change_xid, d.contact_id
     FROM contact_tombstones AS d
     WHERE d.tenant_id = %(tenant_id)s
       AND (d.tenant_id, d.change_xid, d.contact_id) > (%(tenant_id)s, %(after_xid)s::xid8, %(after_id)s::bigint)
       AND d.change_xid < h.xmin
       AND (%(since)s::timestamptz IS NULL
            OR d.deleted_at >= %(since)s::timestamptz - interval '5 minutes')
     ORDER BY d.change_xid, d.contact_id
     LIMIT %(limit)s)
    ORDER BY change_xid, id
    LIMIT %(limit)s
) AS page ON true
ORDER BY page.change_xid, page.id;

-- name: resolve-contact-identifiers
-- Which contacts of the tenant these ids, usernames (lower-cased) and emails
-- (normalised) name: Inrō's door resolves a whole request in this one query.
SELECT id, username, email
FROM contacts
WHERE tenant_id = %(tenant_id)s
  AND (id = ANY(%(ids)b::bigint[]) OR username = ANY(%(usernames)b::text[])
       OR email = ANY(%(emails)b::text[]));
