"""Fixtures: a real PostgreSQL (TEST_DATABASE_URL, else an embedded server),
a clean database per test, and builders for tenants, tokens and requests."""

import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from app import create_app
from app.db import apply_schema, pool_of
from app.engine.tokens import create_token
from app.sql import queries
from tests.receiver import Receiver
from tests.server import running_gunicorn
from tests.support import auth_headers


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The database every test talks to, with the schema applied.

    With TEST_DATABASE_URL the suite creates a database of its own on that
    server and drops it afterwards, so that two runs against one server, or
    tables an older version left there, cannot interfere. Without it, an
    embedded PostgreSQL in a temporary directory.
    """
    server_url = os.environ.get("TEST_DATABASE_URL")
    if not server_url:
        from app.db import start_embedded_server

        url = start_embedded_server(tmp_path_factory.mktemp("embedded-pg"))
        apply_schema_at(url)
        yield url
        return
    name = f"contactsync_test_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(server_url, dbname=name)
    try:
        apply_schema_at(url)
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def apply_schema_at(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        apply_schema(conn)


@pytest.fixture
def make_app(database_url: str) -> Iterator[Callable[..., Flask]]:
    """Build an app with config overrides; its pool is closed after the test.

    Rate limits are off unless a test sets RATE_LIMIT: the fuzz and corpus
    tests send more requests a minute than the default allows.
    """
    apps: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        app = create_app({"TESTING": True, "DATABASE_URL": database_url, "RATE_LIMIT": None,
                          **overrides})
        apps.append(app)
        return app

    yield build
    for app in apps:
        pool_of(app).close()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(DB_POOL_MAX=8)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    """A direct connection for arranging and asserting, outside the app."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture(autouse=True)
def clean_database(db: psycopg.Connection) -> None:
    """Every test starts from empty tables."""
    db.execute("TRUNCATE contacts, api_tokens, tenants RESTART IDENTITY CASCADE")


@pytest.fixture
def make_tenant(db: psycopg.Connection) -> Callable[..., dict]:
    def build(slug: str = "acme") -> dict:
        return db.execute(queries["insert-tenant"], {"slug": slug, "name": slug}).fetchone()

    return build


@pytest.fixture
def make_token(db: psycopg.Connection) -> Callable[..., str]:
    def build(tenant: dict, scopes: tuple[str, ...] = ("contacts:read", "contacts:write")) -> str:
        token, _ = create_token(db, tenant["id"], list(scopes))
        return token.secret

    return build


@pytest.fixture
def tenant(make_tenant: Callable[..., dict]) -> dict:
    return make_tenant("acme")


@pytest.fixture
def headers(tenant: dict, make_token: Callable[..., str]) -> dict[str, str]:
    """Authorization for tenant `acme` with read and write scopes."""
    return auth_headers(make_token(tenant))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real webhook receiver on 127.0.0.1."""
    with Receiver() as running:
        yield running


@pytest.fixture
def make_webhook(make_app: Callable[..., Flask]) -> Callable[[dict, str], str]:
    """Point a tenant's webhook at `url` with the CLI (loopback allowed); return its secret."""
    runner = make_app(WEBHOOK_ALLOW_PRIVATE=True).test_cli_runner()

    def build(tenant: dict, url: str) -> str:
        result = runner.invoke(args=["tenants", "set-webhook", tenant["slug"], url])
        assert result.exit_code == 0, result.output
        return result.output.strip().splitlines()[-1]

    return build


@pytest.fixture
def gunicorn(database_url: str) -> Iterator[str]:
    """A real gunicorn (2 workers) on 127.0.0.1 against the test database; its base URL."""
    with running_gunicorn(database_url) as base_url:
        yield base_url
