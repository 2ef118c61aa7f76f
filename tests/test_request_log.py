"""One JSON line per request (app/web/request_log.py), and never a token in it."""

import json
import logging

import pytest

from tests.support import auth_headers, post_bulk


class Lines(logging.Handler):
    """Collects what the request logger writes."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def request_lines():
    logger = logging.getLogger("contactsync.requests")
    collector = Lines()
    logger.addHandler(collector)
    yield collector.lines
    logger.removeHandler(collector)


def test_a_bulk_request_logs_its_tenant_route_status_counts_and_duration(client, headers, request_lines):
    response = post_bulk(client, {**headers, "X-Request-Id": "req-42"},
                         [{"externalId": "a", "email": "alice@example.com"}, {"email": "bad@"}])
    assert response.headers["X-Request-Id"] == "req-42"
    [line] = request_lines
    entry = json.loads(line)
    assert entry["requestId"] == "req-42"
    assert (entry["method"], entry["route"], entry["status"], entry["tenant"]) == \
        ("POST", "/contacts/bulk-update", 200, "acme")
    assert entry["counts"] == {"totalCount": 2, "createdCount": 1, "updatedCount": 0,
                               "unchangedCount": 0, "staleCount": 0, "failedCount": 1}
    assert entry["durationMs"] >= 0 and entry["replayed"] is False


def test_no_token_header_query_or_address_reaches_the_log(client, tenant, make_token, request_lines):
    token = make_token(tenant)
    post_bulk(client, auth_headers(token), [{"externalId": "a", "email": "alice@example.com"}])
    client.get("/contacts?email=alice@example.com", headers=auth_headers(token))
    client.get("/contacts", headers=auth_headers(token + "x"))  # a 401 with a near-token
    client.get("/contacts", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert len(request_lines) == 4
    text = "\n".join(request_lines)
    for secret in (token, token[:20], "Bearer", "Authorization", "alice", "dXNlcjpwYXNz"):
        assert secret not in text
    assert [json.loads(line)["status"] for line in request_lines] == [200, 200, 401, 401]


@pytest.mark.parametrize("sent", ["", "x" * 129, "caf\u00e9", "tab\tid"])
def test_a_request_id_that_is_not_short_printable_ascii_is_replaced(client, sent, request_lines):
    response = client.get("/health", headers={"X-Request-Id": sent})
    request_id = response.headers["X-Request-Id"]
    assert request_id != sent and len(request_id) == 32
    assert json.loads(request_lines[0])["requestId"] == request_id
