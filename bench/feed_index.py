"""What the change feed's index costs bulk writes: an A/B on two identical databases.

Both scratch databases (on the bench's server) get schema.sql and the same
100,000 contacts; one then drops contacts_tenant_change_idx. The engine
writes the same mixed batches of 1000 (500 updates, 500 inserts) into both,
alternating which goes first, so drift on a busy machine hits both alike.
The column itself stays in both: it is 8 bytes a row, and what makes the
index cost more than space is that every update must now write all index
entries (an update that changes an indexed column cannot be HOT).
"""

import secrets
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from app.db import apply_schema
from app.engine.upsert import upsert_contacts

SEEDED = 100_000
BATCHES = 70  # per variant; the first WARMUP are not counted
WARMUP = 10
HALF = 500


@contextmanager
def scratch_databases(url: str, names: list[str]) -> Iterator[dict[str, psycopg.Connection]]:
    """Create the databases, yield a connection to each, drop them whatever happens."""
    created: list[str] = []
    conns: dict[str, psycopg.Connection] = {}
    try:
        with psycopg.connect(url, autocommit=True) as admin:
            for name in names:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                created.append(name)
        for name in names:
            conns[name] = psycopg.connect(make_conninfo(url, dbname=name), autocommit=True,
                                          row_factory=dict_row)
        yield conns
    finally:
        for conn in conns.values():
            conn.close()
        with psycopg.connect(url, autocommit=True) as admin:
            for name in created:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def seed(conn: psycopg.Connection, with_index: bool) -> int:
    """Schema, one tenant, SEEDED contacts; drop the feed index for the B side."""
    apply_schema(conn)
    tenant = conn.execute("INSERT INTO tenants (slug, name) VALUES ('ab', 'ab') RETURNING id").fetchone()
    tenant_id = tenant["id"]
    conn.execute("INSERT INTO contacts (tenant_id, external_id, email, first_name)"
                 " SELECT %s, 'c' || i, 'c' || i || '@example.com', 'x'"
                 " FROM generate_series(1, %s) AS i", (tenant_id, SEEDED))
    if not with_index:
        conn.execute("DROP INDEX contacts_tenant_change_idx")
    conn.execute("VACUUM ANALYZE contacts")
    return tenant_id


def mixed_batch(n: int) -> list[tuple[int, dict[str, Any]]]:
    """Batch n: 500 updates of seeded contacts and 500 new ones, already validated."""
    updates = [(i, {"external_id": f"c{(n * 7919 + i * 131) % SEEDED + 1}", "first_name": f"n{n}"})
               for i in range(HALF)]
    inserts = [(HALF + i, {"external_id": f"new-{n}-{i}", "email": f"new-{n}-{i}@example.com"})
               for i in range(HALF)]
    return updates + inserts


def measure_feed_index_cost(url: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Median engine time per mixed batch of 1000 with and without the feed index."""
    tag = secrets.token_hex(3)
    names = {"with": f"bench_feed_with_{tag}", "without": f"bench_feed_without_{tag}"}
    try:
        with scratch_databases(url, list(names.values())) as conns:
            tenants = {side: seed(conns[name], side == "with") for side, name in names.items()}
            times: dict[str, list[float]] = {"with": [], "without": []}
            for n in range(BATCHES):
                batch = mixed_batch(n)
                for side in (("with", "without") if n % 2 == 0 else ("without", "with")):
                    conn = conns[names[side]]
                    started = time.perf_counter()
                    with conn.transaction():
                        upsert_contacts(conn, tenants[side], batch)
                    if n >= WARMUP:
                        times[side].append((time.perf_counter() - started) * 1000)
            sizes = {side: conns[name].execute("SELECT pg_indexes_size('contacts') AS b").fetchone()["b"]
                     for side, name in names.items()}
    except psycopg.Error as exc:  # e.g. no CREATEDB right on a DATABASE_URL
        log(f"feed index cost skipped: {type(exc).__name__}")
        return {"skipped": type(exc).__name__}
    with_ms, without_ms = statistics.median(times["with"]), statistics.median(times["without"])
    result = {"batches": BATCHES - WARMUP, "seeded_contacts": SEEDED,
              "median_ms_with_index": round(with_ms, 1), "median_ms_without_index": round(without_ms, 1),
              "extra_ms_per_1000": round(with_ms - without_ms, 1),
              "index_bytes_with": sizes["with"], "index_bytes_without": sizes["without"]}
    log(f"feed index: {without_ms:.1f} ms without, {with_ms:.1f} ms with, per mixed batch of 1000")
    return result


def format_feed_index_cost(result: dict[str, Any]) -> str:
    """One line for the report."""
    if "skipped" in result:
        return f"feed index cost: skipped ({result['skipped']})"
    without, with_ = result["median_ms_without_index"], result["median_ms_with_index"]
    return (f"feed index cost, engine SQL, mixed batch of 1000 on {result['seeded_contacts']:,} contacts "
            f"(interleaved A/B, {result['batches']} batches each): {without:.1f} ms without, "
            f"{with_:.1f} ms with (+{with_ - without:.1f} ms, {with_ / without - 1:+.0%}); indexes "
            f"{result['index_bytes_without'] / 2**20:.0f} MB -> {result['index_bytes_with'] / 2**20:.0f} MB")
