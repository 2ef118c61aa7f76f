"""One envelope for every error; nothing internal leaks (DESIGN 4.4, 7)."""

import time

import pytest
from werkzeug.exceptions import HTTPException

from app.db import get_conn, pool_of
from app.errors import HTTP_ERRORS, ApiError
from tests.support import post_bulk


def test_a_bug_is_a_500_that_shows_nothing(make_app, caplog):
    app = make_app()

    @app.get("/boom")
    def boom():
        raise RuntimeError('relation "secret_table" does not exist')

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    body = response.get_json()
    assert body["error"]["code"] == "internal_error"
    assert "secret_table" not in response.get_data(as_text=True)
    assert "secret_table" in caplog.text  # logged with its traceback for the operator


def test_database_errors_never_show_sql(make_app):
    app = make_app()

    @app.get("/bad-sql")
    def bad_sql():
        with get_conn() as conn:
            conn.execute("SELECT * FROM no_such_table_xyz")

    response = app.test_client().get("/bad-sql")
    assert response.status_code == 500
    assert "no_such_table_xyz" not in response.get_data(as_text=True)


def test_database_down_is_503_with_retry_after(make_app, headers):
    app = make_app(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none", DB_POOL_MIN=0,
                   DB_POOL_TIMEOUT=1)
    client = app.test_client()
    for response in (client.get("/ready"), post_bulk(client, headers, [{"externalId": "a"}])):
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "database_unavailable"
        assert int(response.headers["Retry-After"]) > 0
    assert client.get("/health").status_code == 200  # the process itself is fine


def test_an_exhausted_pool_is_503_after_the_pool_timeout_not_a_queue(make_app, headers):
    """Every connection is busy: the request waits DB_POOL_TIMEOUT, then is told to retry."""
    app = make_app(DB_POOL_MIN=1, DB_POOL_MAX=1, DB_POOL_TIMEOUT=1)
    pool = pool_of(app)
    client = app.test_client()
    with pool.connection():  # the only connection, held
        started = time.monotonic()
        response = client.get("/ready")
        waited = time.monotonic() - started
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "database_unavailable"
    assert "Retry-After" in response.headers
    assert 0.9 <= waited < 5  # it waited for the pool, and not without end
    assert client.get("/ready").status_code == 200  # free again: served again


def test_every_connection_has_its_timeouts(make_app):
    app = make_app(STATEMENT_TIMEOUT_MS=1234, LOCK_TIMEOUT_MS=567)
    with app.app_context(), get_conn() as conn:
        settings = [conn.execute(f"SHOW {name}").fetchone()[name] for name in
                    ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")]
    assert settings == ["1234ms", "567ms", "1min"]


def test_a_statement_over_its_timeout_is_cancelled_and_answered_503(make_app):
    app = make_app(STATEMENT_TIMEOUT_MS=200)

    @app.get("/slow")
    def slow():
        with get_conn() as conn:
            conn.execute("SELECT pg_sleep(5)")

    started = time.monotonic()
    response = app.test_client().get("/slow")
    assert time.monotonic() - started < 2
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "database_unavailable"


@pytest.mark.parametrize("status", sorted(HTTP_ERRORS))
def test_every_mapped_werkzeug_error_uses_the_envelope(make_app, status):
    app = make_app()

    @app.get("/raise")
    def raise_it():
        from flask import abort
        abort(status)

    response = app.test_client().get("/raise")
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == HTTP_ERRORS[status].code


def test_error_codes_are_unique_per_class():
    codes = [cls.code for cls in ApiError.__subclasses__()]
    assert len(codes) == len(set(codes))
    assert all(issubclass(cls, ApiError) and not issubclass(cls, HTTPException)
               for cls in HTTP_ERRORS.values())
