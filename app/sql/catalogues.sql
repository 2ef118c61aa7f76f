-- Statements of the tenants' catalogues (tags, folders, companies) and of
-- the contacts' links to them (app/engine/upsert.py, app/engine/catalogues.py).
-- Tags and folders have the same shape, so their statements come in pairs.

-- name: ensure-tags
-- The entries of these tag names (compared case-insensitively), each saying
-- whether this statement created it: those that are new are made in the
-- spelling given, in name order so that concurrent
-- batches insert in the same order. A name a concurrent transaction created
-- after this statement's snapshot is in neither part of the answer (the
-- insert waits for it, then does nothing): the engine sees it missing and
-- retries the transaction, which then finds it.
WITH sent AS (
    SELECT name FROM unnest(%(names)b::text[]) AS name
),
existing AS (
    SELECT t.id, t.name
    FROM tags AS t
    WHERE t.tenant_id = %(tenant_id)s AND lower(t.name) IN (SELECT lower(name) FROM sent)
),
created AS (
    INSERT INTO tags (tenant_id, name)
    SELECT %(tenant_id)s, s.name
    FROM sent AS s
    WHERE lower(s.name) NOT IN (SELECT lower(name) FROM existing)
    ORDER BY lower(s.name)
    ON CONFLICT (tenant_id, lower(name)) DO NOTHING
    RETURNING id, name
)
SELECT id, name, false AS created FROM existing
UNION ALL
SELECT id, name, true AS created FROM created;

-- name: ensure-folders
-- ensure-tags, for folders.
WITH sent AS (
    SELECT name FROM unnest(%(names)b::text[]) AS name
),
existing AS (
    SELECT f.id, f.name
    FROM folders AS f
    WHERE f.tenant_id = %(tenant_id)s AND lower(f.name) IN (SELECT lower(name) FROM sent)
),
created AS (
    INSERT INTO folders (tenant_id, name)
    SELECT %(tenant_id)s, s.name
    FROM sent AS s
    WHERE lower(s.name) NOT IN (SELECT lower(name) FROM existing)
    ORDER BY lower(s.name)
    ON CONFLICT (tenant_id, lower(name)) DO NOTHING
    RETURNING id, name
)
SELECT id, name, false AS created FROM existing
UNION ALL
SELECT id, name, true AS created FROM created;

-- name: select-company-names
-- The catalogue's name of each company a batch sends: the engine needs it to
-- tell a re-sent company (unchanged) from a renamed one.
SELECT company_id, name
FROM companies
WHERE tenant_id = %(tenant_id)s AND company_id = ANY(%(company_ids)b::text[]);

-- name: ensure-companies
-- The ids of these companies, creating the new ones and renaming those sent
-- with another name (a NULL name: none was sent, keep the stored one). Parallel
-- arrays, sorted by company_id. A company a concurrent transaction created is
-- missing from the answer, as in ensure-tags, and the engine retries.
WITH sent AS (
    SELECT * FROM unnest(%(company_ids)b::text[], %(names)b::text[]) AS s (company_id, name)
),
existing AS (
    SELECT o.id, o.company_id
    FROM companies AS o
    JOIN sent AS s ON o.tenant_id = %(tenant_id)s AND o.company_id = s.company_id
),
renamed AS (
    UPDATE companies AS o
    SET name = s.name
    FROM sent AS s
    WHERE o.tenant_id = %(tenant_id)s AND o.company_id = s.company_id
      AND s.name IS NOT NULL AND o.name IS DISTINCT FROM s.name
),
created AS (
    INSERT INTO companies (tenant_id, company_id, name)
    SELECT %(tenant_id)s, s.company_id, s.name
    FROM sent AS s
    WHERE s.company_id NOT IN (SELECT company_id FROM existing)
    ORDER BY s.company_id
    ON CONFLICT (tenant_id, company_id) DO NOTHING
    RETURNING id, company_id
)
SELECT id, company_id FROM existing
UNION ALL
SELECT id, company_id FROM created;

-- name: write-contact-tags
-- Delete and add the links that changed, as pairs of parallel arrays
-- (contact id, tag id), in one statement; the two sets never overlap.
WITH removed AS (
    DELETE FROM contact_tags AS l
    USING unnest(%(removed_contact_ids)b::bigint[], %(removed_ids)b::bigint[]) AS r (contact_id, tag_id)
    WHERE l.tenant_id = %(tenant_id)s AND l.contact_id = r.contact_id AND l.tag_id = r.tag_id
)
INSERT INTO contact_tags (tenant_id, contact_id, tag_id)
SELECT %(tenant_id)s, a.contact_id, a.tag_id
FROM unnest(%(added_contact_ids)b::bigint[], %(added_ids)b::bigint[]) AS a (contact_id, tag_id)
ON CONFLICT DO NOTHING;

-- name: write-contact-folders
-- write-contact-tags, for folders.
WITH removed AS (
    DELETE FROM contact_folders AS l
    USING unnest(%(removed_contact_ids)b::bigint[], %(removed_ids)b::bigint[]) AS r (contact_id, folder_id)
    WHERE l.tenant_id = %(tenant_id)s AND l.contact_id = r.contact_id AND l.folder_id = r.folder_id
)
INSERT INTO contact_folders (tenant_id, contact_id, folder_id)
SELECT %(tenant_id)s, a.contact_id, a.folder_id
FROM unnest(%(added_contact_ids)b::bigint[], %(added_ids)b::bigint[]) AS a (contact_id, folder_id)
ON CONFLICT DO NOTHING;

-- name: write-contact-companies
-- write-contact-tags, for companies (company_id here is the catalogue's id).
WITH removed AS (
    DELETE FROM contact_companies AS l
    USING unnest(%(removed_contact_ids)b::bigint[], %(removed_ids)b::bigint[]) AS r (contact_id, company_id)
    WHERE l.tenant_id = %(tenant_id)s AND l.contact_id = r.contact_id AND l.company_id = r.company_id
)
INSERT INTO contact_companies (tenant_id, contact_id, company_id)
SELECT %(tenant_id)s, a.contact_id, a.company_id
FROM unnest(%(added_contact_ids)b::bigint[], %(added_ids)b::bigint[]) AS a (contact_id, company_id)
ON CONFLICT DO NOTHING;

-- name: list-tags
-- GET /tags: a page of the tenant's tags in id order, after the last id seen.
SELECT id, name FROM tags
WHERE tenant_id = %(tenant_id)s AND id > %(after)s
ORDER BY id
LIMIT %(limit)s;

-- name: list-folders
-- GET /folders: list-tags, for folders.
SELECT id, name FROM folders
WHERE tenant_id = %(tenant_id)s AND id > %(after)s
ORDER BY id
LIMIT %(limit)s;

-- name: list-companies
-- GET /companies: a page of the tenant's companies in id order; the id is
-- the page's cursor, companyId and name what a client sees.
SELECT id, company_id, name FROM companies
WHERE tenant_id = %(tenant_id)s AND id > %(after)s
ORDER BY id
LIMIT %(limit)s;

-- name: select-folders-by-ids
-- The tenant's folders among these ids (Inrō's folder_ids): an id of another
-- tenant's folder is not found, like an unknown one.
SELECT id, name
FROM folders
WHERE tenant_id = %(tenant_id)s AND id = ANY(%(ids)b::bigint[]);

-- name: select-tags-by-ids
-- The tenant's tags among these ids (Intercom's tags by id): an id of another
-- tenant's tag is not found, like an unknown one, and is skipped.
SELECT id, name
FROM tags
WHERE tenant_id = %(tenant_id)s AND id = ANY(%(ids)b::bigint[]);
