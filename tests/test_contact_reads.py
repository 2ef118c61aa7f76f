"""Reads (app/web/contact_reads.py): one contact, look-ups, and a change feed that misses nothing."""

import json
import random
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.db import pool_of
from app.engine.reads import FeedPosition
from tests.reference import Reference, rows
from tests.support import auth_headers, post_bulk, stored_contacts

CONTACT_KEYS = ["id", "externalId", "email", "username", "firstName", "lastName", "name", "phone",
                "locale", "optIn", "status", "ownerId", "avatarUrl", "attributes", "sourceUpdatedAt", "tags",
                "folders", "companies", "createdAt", "updatedAt"]


def get(client, headers, path: str, **params):
    return client.get(path, query_string=params, headers=headers)


def follow_feed(client, headers, **params) -> tuple[list[dict], str]:
    """Every page from `params` until hasMore is false; the contacts and the last cursor."""
    seen: list[dict] = []
    while True:
        response = get(client, headers, "/contacts", **params)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        seen += body["data"]
        params = {"cursor": body["nextCursor"], "limit": params.get("limit", 100)}
        if not body["hasMore"]:
            return seen, body["nextCursor"]


def test_a_contact_by_id_in_the_documented_shape(client, headers, db, tenant):
    post_bulk(client, headers, [{"externalId": "a", "email": "A@Example.com", "locale": "pt-br",
                                 "attributes": {"plan": "pro"}}])
    [stored] = stored_contacts(db, tenant["id"])
    response = get(client, headers, f"/contacts/{stored['id']}")
    assert response.status_code == 200
    contact = response.get_json()["data"]
    assert list(contact) == CONTACT_KEYS
    assert (contact["id"], contact["externalId"], contact["email"], contact["locale"],
            contact["attributes"]) == (stored["id"], "a", "a@example.com", "pt-BR", {"plan": "pro"})
    assert datetime.fromisoformat(contact["updatedAt"]) == stored["updated_at"]


def test_unknown_ids_and_other_tenants_ids_are_not_found(client, headers, db, make_tenant, make_token):
    other = make_tenant("globex")
    post_bulk(client, auth_headers(make_token(other)), [{"externalId": "theirs"}])
    [theirs] = stored_contacts(db, other["id"])
    for path in (f"/contacts/{theirs['id']}", "/contacts/999999", f"/contacts/{2 ** 70}"):
        response = get(client, headers, path)
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("params, expected", [
    ({"email": "  ALICE@example.COM "}, ["a"]),   # normalised as on write
    ({"externalId": " a "}, ["a"]),               # trimmed as on write
    ({"email": "nobody@example.com"}, []),
    ({"externalId": "theirs"}, []),               # another tenant's
])
def test_look_ups_find_zero_or_one_contact(client, headers, make_tenant, make_token, params, expected):
    post_bulk(client, headers, [{"externalId": "a", "email": "alice@example.com"}])
    post_bulk(client, auth_headers(make_token(make_tenant("globex"))), [{"externalId": "theirs"}])
    response = get(client, headers, "/contacts", **params)
    assert response.status_code == 200
    assert [c["externalId"] for c in response.get_json()["data"]] == expected


@pytest.mark.parametrize("query, code", [
    ("email=bad@", "validation_failed"),
    ("externalId=%20%20", "validation_failed"),
    ("email=a@example.com&externalId=a", "invalid_request"),
    ("email=a@example.com&limit=5", "invalid_request"),
    ("email=bad@&limit=5", "invalid_request"),
    ("email=", "validation_failed"),
    ("cursor=abc&updatedSince=2026-01-01T00:00:00Z", "invalid_request"),
    ("updatedSince=yesterday", "invalid_request"),
    ("updatedSince=2026-01-01T00:00:00", "invalid_request"),  # no time zone
    ("limit=0", "invalid_request"),
    ("limit=1001", "invalid_request"),
    ("limit=ten", "invalid_request"),
    ("limit=5&limit=6", "invalid_request"),
    ("colour=blue", "invalid_request"),
    ("cursor=not-a-cursor", "invalid_cursor"),
    ("cursor=eyJ2IjoxfQ", "invalid_cursor"),                  # {"v":1}: ours in shape only
    ("cursor=" + FeedPosition("1", -5).encode(), "invalid_cursor"),
    ("cursor=" + FeedPosition("12x", 1).encode(), "invalid_cursor"),
])
def test_bad_queries_get_a_stable_code(client, headers, query, code):
    response = client.get(f"/contacts?{query}", headers=headers)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code


def test_reads_need_the_read_scope(client, tenant, make_token):
    write_only = auth_headers(make_token(tenant, scopes=("contacts:write",)))
    for path in ("/contacts", "/contacts/1", "/contacts?email=a@example.com"):
        response = client.get(path, headers=write_only)
        assert response.status_code == 403
        assert response.get_json()["error"]["details"] == {"requiredScope": "contacts:read"}
    assert client.get("/contacts").status_code == 401


def test_the_feed_pages_through_everything_and_resumes(client, headers, tenant):
    post_bulk(client, headers, [{"externalId": f"c{i}"} for i in range(25)])
    first = get(client, headers, "/contacts", limit=10).get_json()
    assert len(first["data"]) == 10 and first["hasMore"] is True
    seen, cursor = follow_feed(client, headers, limit=10)
    assert sorted(c["externalId"] for c in seen) == sorted(f"c{i}" for i in range(25))
    assert len(seen) == 25

    idle = get(client, headers, "/contacts", cursor=cursor).get_json()
    assert (idle["data"], idle["hasMore"]) == ([], False)
    post_bulk(client, headers, [{"externalId": "c3", "firstName": "Changed"}, {"externalId": "new"}])
    for resume_from in (cursor, idle["nextCursor"]):  # the idle page's cursor moved up, losing nothing
        later, _ = follow_feed(client, headers, cursor=resume_from)
        assert [(c["externalId"], c["firstName"]) for c in later] == [("c3", "Changed"), ("new", None)]


def test_a_quiet_poller_does_not_walk_the_same_rows_again(client, headers, db, tenant):
    """A page that is not full moves the cursor up to the horizon: the next
    poll starts past every row already examined, even those updatedSince skipped."""
    post_bulk(client, headers, [{"externalId": f"c{i}"} for i in range(50)])
    db.execute("UPDATE contacts SET updated_at = now() - interval '2 days'")
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    page = get(client, headers, "/contacts", updatedSince=since).get_json()
    assert page["data"] == [] and page["hasMore"] is False
    position = FeedPosition.decode(page["nextCursor"])
    top = db.execute("SELECT max(change_xid::text::bigint) AS x FROM contacts").fetchone()["x"]
    assert int(position.change_xid) > top  # past every row examined
    post_bulk(client, headers, [{"externalId": "c7", "firstName": "Back"}])
    later, _ = follow_feed(client, headers, cursor=page["nextCursor"])
    assert [c["externalId"] for c in later] == ["c7"]


def test_a_cursor_survives_a_restart_of_the_service(make_app, headers, tenant):
    first_app = make_app()
    post_bulk(first_app.test_client(), headers, [{"externalId": f"c{i}"} for i in range(5)])
    page = get(first_app.test_client(), headers, "/contacts", limit=3).get_json()
    pool_of(first_app).close()
    rest, _ = follow_feed(make_app().test_client(), headers, cursor=page["nextCursor"])
    assert [c["externalId"] for c in page["data"] + rest] == [f"c{i}" for i in range(5)]


def test_updated_since_starts_the_feed_at_that_time_with_some_slack(client, headers, db, tenant):
    """A transaction that started a little before updatedSince may commit after it:
    its rows (updatedAt = its start) still come, at least once."""
    post_bulk(client, headers, [{"externalId": "old"}, {"externalId": "started-before"}])
    db.execute("UPDATE contacts SET updated_at = now() - interval '2 days' WHERE external_id = 'old'")
    db.execute("UPDATE contacts SET updated_at = now() - interval '2 minutes'"
               " WHERE external_id = 'started-before'")
    post_bulk(client, headers, [{"externalId": "recent"}])
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    seen, _ = follow_feed(client, headers, updatedSince=since)
    assert [c["externalId"] for c in seen] == ["started-before", "recent"]


def test_the_feed_waits_for_a_transaction_that_commits_late(client, headers, db, tenant, database_url):
    """A writer holding a transaction open with an older id than rows already
    committed: a naive feed would hand those rows out and move past its row."""
    import psycopg

    post_bulk(client, headers, [{"externalId": "before"}])
    with psycopg.connect(database_url) as slow:
        slow.execute("INSERT INTO contacts (tenant_id, external_id) VALUES (%s, 'late')", (tenant["id"],))
        post_bulk(client, headers, [{"externalId": "after"}])  # commits first, with a newer id
        seen, cursor = follow_feed(client, headers)
        assert [c["externalId"] for c in seen] == ["before"]  # held back at the open transaction
        slow.commit()
    rest, _ = follow_feed(client, headers, cursor=cursor)
    assert sorted(c["externalId"] for c in rest) == ["after", "late"]


FEED_WRITERS = 3
FEED_SECONDS = 3.0
FEED_IDENTITIES = 200
FEED_PAGE = 7  # small pages end inside one batch's rows, which share one updatedAt


def test_a_reader_following_the_feed_under_concurrent_writes_ends_with_the_table(make_app, headers,
                                                                               db, tenant):
    """Writers update overlapping contacts for a few seconds while a reader
    follows the feed; once they stop and the reader drains it, the reader's
    latest view of every contact equals the table."""
    app = make_app(DB_POOL_MAX=FEED_WRITERS + 2)
    post_bulk(app.test_client(), headers, [{"externalId": f"c{i}"} for i in range(FEED_IDENTITIES)])
    stop = threading.Event()
    errors: list[str] = []

    def writer(seed: int) -> None:
        rng, client, n = random.Random(seed), app.test_client(), 0
        while not stop.is_set() and n < 500:  # bounded in count and in time
            n += 1
            picked = rng.sample(range(FEED_IDENTITIES), 20)
            contacts = [{"externalId": f"c{i}", "attributes": {f"w{seed}": n}} for i in picked]
            response = post_bulk(client, headers, contacts)
            if response.status_code != 200 or response.get_json()["data"]["failedCount"]:
                errors.append(str(response.get_json()))

    reader_client = app.test_client()
    latest: dict[int, dict] = {}
    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(FEED_WRITERS)]
    for thread in threads:
        thread.start()
    cursor, deadline = None, time.monotonic() + FEED_SECONDS
    while time.monotonic() < deadline:
        page, cursor = follow_feed(reader_client, headers, limit=FEED_PAGE,
                                   **({"cursor": cursor} if cursor else {}))
        latest.update({c["id"]: c for c in page})
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    page, _ = follow_feed(reader_client, headers, limit=FEED_PAGE,
                          **({"cursor": cursor} if cursor else {}))
    latest.update({c["id"]: c for c in page})

    table = {c["id"]: c for c in stored_contacts(db, tenant["id"])}
    assert len(table) == FEED_IDENTITIES
    assert set(latest) == set(table)
    stale = {i: (latest[i]["attributes"], table[i]["attributes"]) for i in table
             if latest[i]["attributes"] != table[i]["attributes"]
             or datetime.fromisoformat(latest[i]["updatedAt"]) != table[i]["updated_at"]}
    assert stale == {}


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(sequence=st.lists(rows(), min_size=1, max_size=10))
def test_single_upserts_and_look_ups_follow_the_sequential_reference(client, headers, db, tenant,
                                                                     sequence):
    db.execute("TRUNCATE contacts, tags, folders, companies RESTART IDENTITY CASCADE")
    reference = Reference()
    db_id_of: dict[int, int] = {}
    for row in sequence:
        reference.batch += 1
        status, contact, conflict = reference.apply(0, row)
        response = client.post("/contacts", json=row, headers=headers)
        body = response.get_json()
        if status == "failed" and conflict is None:
            assert (response.status_code, body["error"]["code"]) == (400, "validation_failed")
            continue
        if status == "failed":
            assert (response.status_code, body["error"]["code"]) == (409, "identity_conflict")
            by_external_id, by_email, by_username = (c and db_id_of[c.id] for c in conflict)
            assert body["error"]["details"]["conflict"] == {"externalIdContactId": by_external_id,
                                                            "emailContactId": by_email,
                                                            "usernameContactId": by_username}
            continue
        assert response.status_code == (201 if status == "created" else 200)
        assert body["data"]["status"] == status
        if status == "created":
            db_id_of[contact.id] = body["data"]["contact"]["id"]
        assert body["data"]["contact"]["id"] == db_id_of[contact.id]
        assert wire_state(body["data"]["contact"]) == contact.state()

    for contact in reference.contacts:
        for params in ({"externalId": contact.external_id}, {"email": contact.email},
                       {"username": contact.username}):
            if None in params.values():
                continue
            found = get(client, headers, "/contacts", **params).get_json()["data"]
            assert [(c["id"], wire_state(c)) for c in found] == [(db_id_of[contact.id], contact.state())]


def wire_state(contact: dict) -> tuple:
    """A contact as the API shows it, in the reference model's terms."""
    return (contact["externalId"], contact["email"], contact["username"], contact["firstName"],
            contact["optIn"], contact["status"], json.dumps(contact["attributes"], sort_keys=True),
            tuple(sorted(t["name"].lower() for t in contact["tags"])),
            tuple(sorted(f["name"].lower() for f in contact["folders"])),
            tuple(sorted(c["companyId"] for c in contact["companies"])),
            contact["sourceUpdatedAt"] and datetime.fromisoformat(contact["sourceUpdatedAt"]))


def test_single_upsert_answers_and_refuses(client, headers, db, tenant):
    created = client.post("/contacts", json={"externalId": "a", "email": "A@Example.com"},
                          headers=headers)
    assert created.status_code == 201
    assert created.get_json()["data"]["contact"]["email"] == "a@example.com"
    same = client.post("/contacts", json={"externalId": "a", "email": "a@example.com"}, headers=headers)
    assert (same.status_code, same.get_json()["data"]["status"]) == (200, "unchanged")
    for body, code in (([{"externalId": "a"}], "invalid_request"),
                       ({"externalId": "a", "runWorkflow": "yes"}, "validation_failed"),
                       ({"externalId": "a", "colour": "blue"}, "validation_failed"),
                       ({"contacts": [{"externalId": "a"}]}, "validation_failed")):
        response = client.post("/contacts", json=body, headers=headers)
        assert (response.status_code, response.get_json()["error"]["code"]) == (400, code)
    assert len(stored_contacts(db, tenant["id"])) == 1
