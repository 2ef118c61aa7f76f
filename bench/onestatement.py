"""The floor of `make bench`: the best one SQL statement can do for a batch (DESIGN 6).

For a batch of rows already validated (the engine's field names), ONE
statement, run straight through psycopg on the thread's own connection:

1. the rows come in as parallel binary arrays through `unnest`;
2. duplicates within the batch are folded (last row wins, by externalId,
   else email);
3. each row is matched to a stored contact by externalId, then by email; a
   row whose externalId and email are held by two different contacts, or
   whose email holder carries another externalId, is a conflict and is not
   written (the engine fails such a row too);
4. a matched contact is written only when a value differs from what is
   stored, compared the way the engine does it (a field the row does not
   send keeps its value; attributes merge key by key), so an unchanged
   re-sync locks and writes nothing, as the engine's re-sync does not;
5. the contacts to change are locked in id order (ORDER BY id FOR UPDATE),
   then UPDATEd, setting updated_at = now() and change_xid =
   pg_current_xact_id() as update-contacts does;
6. new contacts are INSERTed in key order with ON CONFLICT (tenant_id,
   external_id) DO NOTHING (the email constraint is deferrable, so it cannot
   be an arbiter); change_xid comes from its default, as for the engine;
7. for rows that send tags (added) and companies (attached, with a name), the
   minimum the same outcome needs, in the same statement: missing catalogue
   entries inserted (a company's name updated when it differs) and missing
   links inserted. Removals are not supported (the bench sends none).

It returns counts only (created, updated, unchanged, failed, folded), which
the bench checks against what each batch was built to do.

What it leaves out, on purpose, is the engine's own protocol: the tenant's
advisory write lock, the row-version check, per-row outcomes, stale writes
(sourceUpdatedAt), usernames, updates by id, and a key sent as null (to clear
a field or drop an attribute): the bench sends none of these.
"""

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from bench.drive import check_counts
from bench.seed import Tenant
from bench.workload import Batch

# Columns of the rows, with their array types, in unnest order.
COLUMNS = (("external_id", "text"), ("email", "text"), ("first_name", "text"),
           ("locale", "text"), ("opt_in", "boolean"), ("attributes", "jsonb"))

_UNNEST = ", ".join(f"%({name})b::{kind}[]" for name, kind in COLUMNS)
_NAMES = ", ".join(name for name, _ in COLUMNS)
_INSERTED = _NAMES.replace("attributes", "coalesce(attributes, '{}')")  # a new row sends none: empty

RELATIONS_MARK = "/* relations */"

# The written values: what the row sends, else what is stored.
_NEW_VALUES = """
    coalesce(t.external_id, (t.s).external_id) AS external_id,
    coalesce(t.email, (t.s).email) AS email,
    coalesce(t.first_name, (t.s).first_name) AS first_name,
    coalesce(t.locale, (t.s).locale) AS locale,
    coalesce(t.opt_in, (t.s).opt_in) AS opt_in,
    (t.s).attributes || coalesce(t.attributes, '{}') AS attributes"""

UPSERT = f"""
WITH input AS (
    SELECT * FROM unnest({_UNNEST}) WITH ORDINALITY AS r ({_NAMES}, ord)
),
folded AS (
    SELECT DISTINCT ON (external_id IS NULL, coalesce(external_id, email)) *
    FROM input
    ORDER BY external_id IS NULL, coalesce(external_id, email), ord DESC
),
targets AS (
    SELECT f.*, coalesce(e.id, m.id) AS id,
           CASE WHEN e.id IS NOT NULL THEN e ELSE m END AS s,
           coalesce(e.id <> m.id, false)
           OR (e.id IS NULL AND m.external_id IS NOT NULL AND f.external_id IS NOT NULL
               AND m.external_id <> f.external_id) AS conflict
    FROM folded AS f
    LEFT JOIN contacts AS e ON e.tenant_id = %(tenant_id)s AND e.external_id = f.external_id
    LEFT JOIN contacts AS m ON m.tenant_id = %(tenant_id)s AND m.email = f.email
),
changes AS (
    -- Locked in id order (LockRows sits above the Sort), in the statement
    -- that finds them, so no plan ever joins two CTEs of hundreds of rows.
    SELECT v.*
    FROM (
        SELECT t.id, t.s, {_NEW_VALUES}
        FROM targets AS t
        WHERE t.id IS NOT NULL AND NOT t.conflict
    ) AS v
    JOIN contacts AS c ON c.tenant_id = %(tenant_id)s AND c.id = v.id
    WHERE (v.external_id, v.email, v.first_name, v.locale, v.opt_in, v.attributes)
          IS DISTINCT FROM ((v.s).external_id, (v.s).email, (v.s).first_name, (v.s).locale,
                            (v.s).opt_in, (v.s).attributes)
    ORDER BY c.id
    FOR UPDATE OF c
),
updated AS (
    UPDATE contacts AS c
    SET external_id = ch.external_id, email = ch.email, first_name = ch.first_name,
        locale = ch.locale, opt_in = ch.opt_in, attributes = ch.attributes,
        updated_at = now(), change_xid = pg_current_xact_id()
    FROM changes AS ch
    WHERE c.tenant_id = %(tenant_id)s AND c.id = ch.id
    RETURNING c.id
),
inserted AS (
    INSERT INTO contacts (tenant_id, {_NAMES})
    SELECT %(tenant_id)s, {_INSERTED}
    FROM targets
    WHERE id IS NULL AND NOT conflict
    ORDER BY external_id, email
    ON CONFLICT (tenant_id, external_id) DO NOTHING
    RETURNING id, external_id
){RELATIONS_MARK}
SELECT (SELECT count(*) FROM inserted) AS created,
       (SELECT count(*) FROM updated) AS updated,
       (SELECT count(*) FROM targets WHERE id IS NOT NULL AND NOT conflict)
         - (SELECT count(*) FROM updated) AS unchanged,
       (SELECT count(*) FROM targets WHERE conflict) AS failed,
       (SELECT count(*) FROM input) - (SELECT count(*) FROM folded) AS folded
"""

# Tags and companies, for batches whose rows send them: (row ordinality, name)
# pairs as arrays; a contact's id is the matched one, or the inserted one
# found again by externalId. Links are only added, never removed.
RELATIONS = """,
link_contacts AS (
    SELECT t.ord, coalesce(t.id, i.id) AS contact_id
    FROM targets AS t LEFT JOIN inserted AS i ON t.id IS NULL AND i.external_id = t.external_id
    WHERE NOT t.conflict
),
sent_tags AS (
    SELECT * FROM unnest(%(tag_ords)b::bigint[], %(tag_names)b::text[]) AS x (ord, name)
),
new_tags AS (
    INSERT INTO tags (tenant_id, name)
    SELECT DISTINCT ON (lower(name)) %(tenant_id)s, name FROM sent_tags ORDER BY lower(name), ord
    ON CONFLICT (tenant_id, lower(name)) DO NOTHING
    RETURNING id, lower(name) AS key
),
tag_ids AS (
    SELECT id, key FROM new_tags
    UNION ALL
    SELECT id, lower(name) FROM tags
    WHERE tenant_id = %(tenant_id)s AND lower(name) = ANY (ARRAY(SELECT lower(name) FROM sent_tags))
),
tag_links AS (
    INSERT INTO contact_tags (tenant_id, contact_id, tag_id)
    SELECT DISTINCT %(tenant_id)s, lc.contact_id, ti.id
    FROM sent_tags AS st
    JOIN link_contacts AS lc ON lc.ord = st.ord
    JOIN tag_ids AS ti ON ti.key = lower(st.name)
    WHERE lc.contact_id IS NOT NULL
    ORDER BY 2, 3
    ON CONFLICT DO NOTHING
),
sent_companies AS (
    SELECT * FROM unnest(%(company_ords)b::bigint[], %(company_keys)b::text[],
                         %(company_names)b::text[]) AS x (ord, company_id, name)
),
upserted_companies AS (
    INSERT INTO companies (tenant_id, company_id, name)
    SELECT DISTINCT ON (company_id) %(tenant_id)s, company_id, name
    FROM sent_companies ORDER BY company_id, ord DESC
    ON CONFLICT (tenant_id, company_id) DO UPDATE SET name = excluded.name
        WHERE companies.name IS DISTINCT FROM excluded.name
    RETURNING id, company_id
),
company_ids AS (
    SELECT id, company_id FROM upserted_companies
    UNION
    SELECT id, company_id FROM companies
    WHERE tenant_id = %(tenant_id)s AND company_id = ANY (ARRAY(SELECT company_id FROM sent_companies))
),
company_links AS (
    INSERT INTO contact_companies (tenant_id, contact_id, company_id)
    SELECT DISTINCT %(tenant_id)s, lc.contact_id, ci.id
    FROM sent_companies AS sc
    JOIN link_contacts AS lc ON lc.ord = sc.ord
    JOIN company_ids AS ci ON ci.company_id = sc.company_id
    WHERE lc.contact_id IS NOT NULL
    ORDER BY 2, 3
    ON CONFLICT DO NOTHING
)"""

PLAIN_UPSERT = UPSERT.replace(RELATIONS_MARK, "")
RELATIONS_UPSERT = UPSERT.replace(RELATIONS_MARK, RELATIONS)


def parameters(tenant_id: int, rows: list[tuple[int, dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    """The statement for these rows and its parameters (parallel arrays)."""
    params: dict[str, Any] = {name: [] for name, _ in COLUMNS}
    for _, row in rows:
        for name, _ in COLUMNS:
            params[name].append(row.get(name))
    params["attributes"] = [None if a is None else Jsonb(a) for a in params["attributes"]]
    params["tenant_id"] = tenant_id
    if not any("tags" in row or "companies" in row for _, row in rows):
        return PLAIN_UPSERT, params
    tags: list[tuple[int, str]] = []
    companies: list[tuple[int, str, str | None]] = []
    for ord_, (_, row) in enumerate(rows, start=1):
        tags += [(ord_, name) for name in row.get("tags", {}).get("add", ())]
        companies += [(ord_, c["company_id"], c.get("name")) for c in row.get("companies", ())
                      if not c.get("remove")]
    params.update(tag_ords=[t[0] for t in tags], tag_names=[t[1] for t in tags],
                  company_ords=[c[0] for c in companies], company_keys=[c[1] for c in companies],
                  company_names=[c[2] for c in companies])
    return RELATIONS_UPSERT, params


def upsert_one_statement(conn: psycopg.Connection, tenant_id: int,
                         rows: list[tuple[int, dict[str, Any]]]) -> dict[str, int]:
    """Write a batch with one statement; returns its counts."""
    statement, params = parameters(tenant_id, rows)
    # Relations: planned for each batch (a custom plan, which sees how long the
    # arrays are). A generic plan guesses 10 elements per array and joins the
    # links' CTEs by nested loops, quadratic in the batch.
    prepare = None if statement is PLAIN_UPSERT else False  # None: psycopg's default, prepared when reused
    return conn.execute(statement, params, prepare=prepare).fetchone()


def one_statement_sender(conn: psycopg.Connection, tenants: list[Tenant],
                         scenario: str) -> Callable[[Batch], None]:
    """A sender for one thread: one statement per batch, in its own transaction."""
    tenant_ids = {t.index: t.id for t in tenants}

    def send(batch: Batch) -> None:
        with conn.transaction():
            counts = upsert_one_statement(conn, tenant_ids[batch.tenant], batch.rows)
        check_counts(batch, counts["created"], counts["updated"], counts["unchanged"],
                     counts["failed"], f"one-statement floor {scenario}")

    return send
