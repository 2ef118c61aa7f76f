"""A corpus of hostile requests against a real gunicorn: every one gets an
answer below 500 in our error envelope (or a 2xx with per-row failures), no
answer shows a traceback or SQL, and both workers keep serving."""

import json

import pytest
import requests

BULK = "/contacts/bulk-update"
WRITE_PATHS = [BULK, "/v1/contacts/bulk-update", "/contacts/bulk", "/contacts"]
LEAKS = ("Traceback", "psycopg", "SELECT ", "INSERT ", "File \"", "syntax error")


def body(contacts) -> bytes:
    return json.dumps({"contacts": contacts}).encode()


def row_cases() -> list[tuple[str, bytes]]:
    """Bodies whose rows are hostile; the request itself is well formed."""
    values = {
        "huge int": 10 ** 4000, "float": 1.5, "true": True, "null": None, "list": [1, 2],
        "object": {"a": 1}, "10 MB string": "x" * 10_000_000, "NUL": "a\u0000b",
        "control chars": "\u0001\u0002\u001b[31m", "emoji": "\U0001f600" * 50,
        "RTL override": "\u202eevil", "empty": "", "spaces": "   ", "zero-width": "\u200b",
    }
    cases = []
    for field in ("externalId", "userId", "email", "firstName", "lastName", "phone", "locale",
                  "language", "optIn"):
        for name, value in values.items():
            if name == "10 MB string" and field not in ("externalId", "email"):
                continue  # two of these are enough to show the size limit holds
            cases.append((f"{field}={name}", body([{"externalId": "ok", field: value}])))
    emails = ["用户@例子.广告", "user@xn--80ak6aa92e.com", "admin@аpple.com", "a@b", "@example.com",
              "a..b@example.com", "a@-example.com", "a@example..com", "\"quoted@\"@example.com",
              "a@[127.0.0.1]", "a" * 65 + "@example.com", "a@" + "b" * 250 + ".com",
              "user@example.com\u0000", "USER@EXAMPLE.COM", " \u00a0user@example.com\u3000"]
    cases += [(f"email {e[:20]!r}", body([{"email": e}])) for e in emails]
    attributes = {
        "1000 keys": {f"k{i}": i for i in range(1000)}, "nested": {"a": {"b": 1}},
        "list value": {"a": [1]}, "bad key": {"a b": 1}, "long key": {"k" * 65: 1},
        "long value": {"a": "v" * 3000}, "NaN-ish": {"a": "NaN"}, "huge number": {"a": 10 ** 400},
        "NUL value": {"a": "\u0000"}, "not an object": ["a"], "string": "a=1",
        "unicode key": {"ключ": 1}, "empty key": {"": 1},
    }
    cases += [(f"attributes {name}", body([{"externalId": "ok", "attributes": value}]))
              for name, value in attributes.items()]
    shapes = {"row is a number": [1], "row is a string": ["a"], "row is null": [None],
              "row is a list": [[{"externalId": "a"}]], "row is empty": [{}],
              "unknown field": [{"externalId": "a", "colour": "red"}],
              "alias and name": [{"externalId": "a", "userId": "a"}],
              "duplicate rows": [{"externalId": "a"}] * 500,
              "conflicting rows": [{"externalId": "a", "email": "a@x.com"},
                                   {"externalId": "b", "email": "a@x.com"}]}
    cases += [(name, body(rows)) for name, rows in shapes.items()]
    return cases


def raw_cases() -> list[tuple[str, bytes]]:
    """Bodies that are not what the envelope should be."""
    return [
        ("10,000-deep arrays", b"[" * 10_000 + b"]" * 10_000),
        ("10,000-deep objects", b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
        ("invalid UTF-8", b'{"contacts": [{"externalId": "\xff\xfe"}]}'),
        ("lone surrogate", b'{"contacts": [{"externalId": "\\ud800"}]}'),
        ("UTF-16 body", '{"contacts": []}'.encode("utf-16")),
        ("BOM", b'\xef\xbb\xbf{"contacts": [{"externalId": "a"}]}'),
        ("duplicate keys", b'{"contacts": [], "contacts": [{"externalId": "a"}]}'),
        ("duplicate row keys", b'{"contacts": [{"externalId": "a", "externalId": "b"}]}'),
        ("NaN", b'{"contacts": [{"externalId": "a", "attributes": {"n": NaN}}]}'),
        ("Infinity", b'{"contacts": [{"externalId": "a", "attributes": {"n": -Infinity}}]}'),
        ("5000-digit integer", b'{"contacts": [{"externalId": ' + b"9" * 5000 + b"}]}"),
        ("1e999", b'{"contacts": [{"externalId": "a", "attributes": {"n": 1e999}}]}'),
        ("trailing garbage", b'{"contacts": []} x'),
        ("truncated", b'{"contacts": [{"externalId": "a"'),
        ("empty body", b""),
        ("whitespace", b"   "),
        ("null", b"null"), ("number", b"42"), ("string", b'"contacts"'), ("array", b"[]"),
        ("contacts is an object", b'{"contacts": {"externalId": "a"}}'),
        ("contacts is null", b'{"contacts": null}'),
        ("contacts is a string", b'{"contacts": "a"}'),
        ("options wrong type", b'{"contacts": [{"externalId": "a"}], "atomic": "yes", "runWorkflow": 1}'),
        ("unknown top-level", b'{"contacts": [{"externalId": "a"}], "dryRun": true}'),
        ("1001 rows", body([{"externalId": f"r{i}"} for i in range(1001)])),
        ("6 MB body", body([{"externalId": "a", "firstName": "x" * 6_000_000}])),
        ("NUL bytes raw", b'{"contacts": [\x00]}'),
        ("control chars raw", b'{"contacts": [{"externalId": "a\x01"}]}'),
    ]


CASES = [(f"{path} {name}", path, data) for name, data in row_cases() + raw_cases()
         for path in (WRITE_PATHS if name in ("null", "array", "BOM", "NaN") else [BULK])]


def test_the_corpus_has_at_least_200_cases():
    assert len(CASES) + len(HEADER_CASES) >= 200


HEADER_CASES = [
    ("no content type", {"Content-Type": ""}), ("text/plain", {"Content-Type": "text/plain"}),
    ("form", {"Content-Type": "application/x-www-form-urlencoded"}),
    ("json with charset", {"Content-Type": "application/json; charset=latin-1"}),
    ("multipart", {"Content-Type": "multipart/form-data; boundary=x"}),
    ("bad token", {"Authorization": "Bearer cs_" + "x" * 43}),
    ("long token", {"Authorization": "Bearer cs_" + "x" * 5000}),
    ("non-ASCII token", {"Authorization": "Bearer cs_\u00e9\u00e9"}),
    ("basic auth", {"Authorization": "Basic dXNlcjpwYXNz"}),
    ("empty bearer", {"Authorization": "Bearer "}),
    ("tenant of another", {"X-Tenant-Id": "globex"}),
    ("long tenant header", {"X-Tenant-Id": "a" * 5000}),
    ("idempotency key too long", {"Idempotency-Key": "k" * 256}),
    ("request id long", {"X-Request-Id": "r" * 5000}),
]


@pytest.fixture
def session(tenant, make_token) -> requests.Session:
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {make_token(tenant)}",
                            "Content-Type": "application/json"})
    return session


def assert_clean_answer(response: requests.Response) -> None:
    """Below 500, our JSON envelope, nothing of our insides."""
    assert response.status_code < 500, response.text[:300]
    payload = response.json()
    assert isinstance(payload, dict) and isinstance(payload.get("success"), bool)
    if not payload["success"]:
        assert isinstance(payload["error"]["code"], str) and payload["error"]["code"]
    assert not any(leak in response.text for leak in LEAKS)


def test_hostile_bodies_get_clean_answers_and_the_workers_keep_serving(gunicorn, session):
    failures = []
    for label, path, data in CASES:
        try:
            assert_clean_answer(session.post(f"{gunicorn}{path}", data=data, timeout=60))
        except (AssertionError, ValueError) as exc:
            failures.append(f"{label}: {exc}"[:300])
    assert failures == []
    for _ in range(6):  # both workers still answer
        assert requests.get(f"{gunicorn}/ready", timeout=5).status_code == 200


def test_hostile_headers_methods_and_paths_get_clean_answers(gunicorn, session):
    failures = []
    probes = [("header " + label, "POST", BULK, headers) for label, headers in HEADER_CASES]
    probes += [(f"{method} {path}", method, path, {})
               for method in ("GET", "PUT", "DELETE", "PATCH")
               for path in (BULK, "/contacts/bulk", "/v1/contacts/bulk-update")]
    probes += [(f"path {path}", "GET", path, {}) for path in (
        "/contacts/-1", "/contacts/abc", "/contacts/" + "9" * 400, "/contacts/1%00", "/%ff%fe",
        "/contacts?email=%ff", "/contacts?limit=-1", "/contacts?limit=" + "9" * 400,
        "/contacts?cursor=" + "A" * 600, "/contacts?updatedSince=9999-99-99",
        "/contacts?externalId=%00", "/../etc/passwd", "/docs/../../setup.cfg", "/docs/%2e%2e/x")]
    for label, method, path, headers in probes:
        try:
            response = session.request(method, f"{gunicorn}{path}", headers=headers,
                                       data=body([{"externalId": "a"}]), timeout=30)
            if not path.startswith("/docs"):
                assert_clean_answer(response)
            else:
                assert response.status_code in (400, 404)
        except (AssertionError, ValueError) as exc:
            failures.append(f"{label}: {exc}"[:300])
    assert failures == []
    assert requests.get(f"{gunicorn}/ready", timeout=5).status_code == 200
