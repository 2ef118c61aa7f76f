"""Rate limits per token: 429 rate_limited with Retry-After, RateLimit-* headers,
unlimited probes, and one shared count across workers through Redis."""

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from app.config import load_config
from app.engine.tokens import hash_token
from tests.server import running_gunicorn
from tests.support import auth_headers, post_bulk, stored_contacts

REDIS_URL = "redis://127.0.0.1:6379/0"
LOOKUP = "/contacts?email=someone@example.com"


def test_a_token_past_its_limit_is_refused_with_retry_after(make_app, headers):
    client = make_app(RATE_LIMIT="3/minute").test_client()
    remaining = []
    for _ in range(3):
        response = client.get(LOOKUP, headers=headers)
        assert response.status_code == 200
        assert response.headers["RateLimit-Limit"] == "3"
        assert response.headers["RateLimit-Policy"] == "3;w=60"
        assert 1 <= int(response.headers["RateLimit-Reset"]) <= 60
        remaining.append(response.headers["RateLimit-Remaining"])
    assert remaining == ["2", "1", "0"]

    refused = client.get(LOOKUP, headers=headers)
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "rate_limited"
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["Retry-After"] == refused.headers["RateLimit-Reset"]


def test_a_refused_write_writes_nothing(make_app, headers, tenant, db):
    client = make_app(RATE_LIMIT="1/minute").test_client()
    assert post_bulk(client, headers, [{"externalId": "first"}]).status_code == 200
    refused = post_bulk(client, headers, [{"externalId": "second"}])
    assert refused.status_code == 429
    assert [row["external_id"] for row in stored_contacts(db, tenant["id"])] == ["first"]


def test_the_budget_is_per_token_and_shared_by_its_routes(make_app, tenant, make_token):
    client = make_app(RATE_LIMIT="2/minute").test_client()
    spent, fresh = auth_headers(make_token(tenant)), auth_headers(make_token(tenant))
    assert client.get(LOOKUP, headers=spent).status_code == 200
    assert post_bulk(client, spent, [{"externalId": "a"}]).status_code == 200
    assert client.get("/contacts/1", headers=spent).status_code == 429  # another route, same budget
    assert client.get(LOOKUP, headers=fresh).status_code == 200


def test_requests_without_a_token_spend_their_address_budget(make_app):
    client = make_app(RATE_LIMIT="2/minute").test_client()
    statuses = [client.get(LOOKUP).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]


def test_probes_and_the_document_are_never_limited(make_app, headers):
    client = make_app(RATE_LIMIT="1/minute").test_client()
    for _ in range(3):
        for path in ("/health", "/ready", "/openapi.json", "/docs", "/docs/swagger-ui.css"):
            response = client.get(path, headers=headers)
            assert response.status_code == 200, path
            assert "RateLimit-Limit" not in response.headers


def test_off_disables_limits(make_app, headers):
    client = make_app(RATE_LIMIT=None).test_client()
    for _ in range(5):
        response = client.get(LOOKUP, headers=headers)
        assert response.status_code == 200
        assert "RateLimit-Limit" not in response.headers


@pytest.mark.parametrize("environ, expected", [
    ({}, ("600/minute", "memory://")),
    ({"CONTACTSYNC_RATE_LIMIT": "OFF"}, (None, "memory://")),
    ({"CONTACTSYNC_RATE_LIMIT": "10/second", "CONTACTSYNC_RATE_LIMIT_STORAGE": REDIS_URL},
     ("10/second", REDIS_URL)),
])
def test_rate_limit_settings(environ, expected):
    config = load_config(environ)
    assert (config["RATE_LIMIT"], config["RATE_LIMIT_STORAGE"]) == expected


@pytest.mark.parametrize("environ", [
    {"CONTACTSYNC_RATE_LIMIT": "lots"},
    {"CONTACTSYNC_RATE_LIMIT": "600/fortnight"},
    {"CONTACTSYNC_RATE_LIMIT_STORAGE": "memcached://127.0.0.1:11211"},
])
def test_bad_rate_limit_settings_fail_at_start_up(environ):
    with pytest.raises(ValueError, match="CONTACTSYNC_RATE_LIMIT"):
        load_config(environ)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers: a hung Redis."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stopping = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stopping.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stopping.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_a_hung_redis_slows_no_answer_and_limits_still_hold(make_app, headers, silent_server):
    client = make_app(RATE_LIMIT="3/minute",
                      RATE_LIMIT_STORAGE=f"redis://127.0.0.1:{silent_server}/0").test_client()
    statuses, slowest = [], 0.0
    for _ in range(5):
        started = time.monotonic()
        statuses.append(client.get(LOOKUP, headers=headers).status_code)
        slowest = max(slowest, time.monotonic() - started)
    # The first request waits out one Redis timeout, then counting moves to memory.
    assert slowest < 2.0
    assert statuses == [200, 200, 200, 429, 429]


def redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class HeldRequest:
    """A request sent all but its last line break: the sync worker that accepts it
    waits on it, and serves nothing else until `finish` sends the rest."""

    def __init__(self, base_url: str, token: str) -> None:
        port = int(base_url.rsplit(":", 1)[1])
        self.conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn.sendall(f"GET {LOOKUP} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                          f"Authorization: Bearer {token}\r\n".encode())
        time.sleep(0.3)  # let a worker accept it and start waiting for the rest

    def finish(self) -> int:
        """Send the rest; the answer's status."""
        self.conn.sendall(b"\r\n")
        status_line = self.conn.makefile("rb").readline()
        self.conn.close()
        return int(status_line.split()[1])


def look_ups(base_url: str, token: str, count: int) -> list[int]:
    return [requests.get(base_url + LOOKUP, headers=auth_headers(token), timeout=10).status_code
            for _ in range(count)]


@pytest.mark.skipif(not redis_answers(), reason="needs a Redis server on 127.0.0.1:6379")
def test_two_workers_share_one_count_through_redis(database_url, tenant, make_token):
    import redis

    token = make_token(tenant)
    with running_gunicorn(database_url, CONTACTSYNC_RATE_LIMIT="10/minute",
                          CONTACTSYNC_RATE_LIMIT_STORAGE=REDIS_URL) as base_url:
        on_first = HeldRequest(base_url, token)          # holds worker 1
        assert look_ups(base_url, token, 6) == [200] * 6   # so worker 2 serves these: count 6
        on_second = HeldRequest(base_url, token)         # now holds worker 2
        assert on_first.finish() == 200                    # worker 1: count 7
        # Only worker 1 is free. Counted apart it would have spent 1 of 10 and allow all 6.
        assert look_ups(base_url, token, 6) == [200] * 3 + [429] * 3
        assert on_second.finish() == 429
    stored = redis.Redis.from_url(REDIS_URL)
    keys = stored.keys(f"LIMITS:*contactsync/token:{hash_token(token).hex()}/*")
    assert len(keys) == 1, "the count was not kept in Redis"
    stored.delete(*keys)
