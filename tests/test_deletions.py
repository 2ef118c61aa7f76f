"""Erasure (DESIGN 9, app/web/deletions.py, app/engine/erasure.py): the
contact and every copy of it go in one transaction; its tombstone enters the
change feed, in order, until purged, and a contact.deleted event goes out."""

import json
import random
import threading
import time
from datetime import datetime

import pytest
from psycopg import sql

from app.db import pool_of
from app.engine.erasure import mentions_of, purge_tombstones
from app.engine.outbox import iso_timestamp
from app.workers.dispatcher import DispatchSettings, dispatch_one, purge
from tests.support import auth_headers, drain, post_bulk, stored_contacts, stored_events
from tests.test_contact_reads import follow_feed
from tests.test_webhooks import documented_verifier

DELETE_URL = "/contacts/bulk-delete"


def seed(client, headers, contacts) -> list[int]:
    """Create contacts; their ids in request order."""
    response = post_bulk(client, headers, contacts, returnResults=True)
    assert response.status_code == 200, response.get_json()
    return [result["id"] for result in response.get_json()["data"]["results"]]


def bulk_delete(client, headers, entries, **extra_headers):
    return client.post(DELETE_URL, json={"contacts": entries}, headers={**headers, **extra_headers})


def test_delete_one_contact(client, headers, db, tenant):
    [kept, gone] = seed(client, headers, [{"externalId": "a"}, {"externalId": "b", "tags": {"add": ["vip"]}}])
    response = client.delete(f"/contacts/{gone}", headers=headers)
    assert (response.status_code, response.data) == (204, b"")
    assert client.get(f"/contacts/{gone}", headers=headers).status_code == 404
    assert [c["id"] for c in stored_contacts(db, tenant["id"])] == [kept]
    assert db.execute("SELECT count(*) AS n FROM contact_tags").fetchone()["n"] == 0  # its links went too
    again = client.delete(f"/contacts/{gone}", headers=headers)
    assert (again.status_code, again.get_json()["error"]["code"]) == (404, "not_found")


def test_another_tenants_contact_is_not_found_and_stays(client, headers, db, make_tenant, make_token):
    other = make_tenant("other")
    other_headers = auth_headers(make_token(other))
    [theirs] = seed(client, other_headers, [{"email": "theirs@example.com"}])
    assert client.delete(f"/contacts/{theirs}", headers=headers).status_code == 404
    response = bulk_delete(client, headers, [{"id": theirs}, {"email": "theirs@example.com"}])
    assert response.get_json()["data"] == {"deletedCount": 0, "notFoundCount": 2,
                                           "notFound": [{"id": theirs}, {"email": "theirs@example.com"}]}
    assert len(stored_contacts(db, other["id"])) == 1


def test_bulk_delete_by_each_identifier(client, headers, db, tenant):
    ids = seed(client, headers, [{"externalId": "crm-1"}, {"email": "bo@example.com"},
                                 {"username": "jane"}, {"externalId": "keep", "email": "keep@example.com"},
                                 {"externalId": "by-id"}])
    entries = [{"externalId": " crm-1 "}, {"email": "Bo@Example.COM"}, {"username": "JANE"},
               {"id": ids[4]}, {"email": "nobody@example.com"}, {"externalId": "nobody"}]
    response = bulk_delete(client, headers, entries)
    assert response.status_code == 200
    assert response.get_json() == {"success": True, "data": {
        "deletedCount": 4, "notFoundCount": 2,
        "notFound": [{"email": "nobody@example.com"}, {"externalId": "nobody"}]}}
    assert [c["external_id"] for c in stored_contacts(db, tenant["id"])] == ["keep"]


@pytest.mark.parametrize(("entries", "bad"), [
    ([{"id": 1}, {}], ["1"]),
    ([{"id": 1, "email": "a@example.com"}, {"externalId": "x", "username": "y"}], ["0", "1"]),
    ([{"id": "1"}, {"id": 1.5}, {"id": 0}], ["0", "1", "2"]),
    ([{"email": "not an address"}, {"externalId": "ok", "firstName": "Ann"}], ["0", "1"]),
    ([[1], "x", None], ["0", "1", "2"]),
])
def test_bad_entries_are_all_named_and_nothing_is_deleted(client, headers, db, tenant, entries, bad):
    seed(client, headers, [{"externalId": "x"}, {"email": "a@example.com"}])
    response = bulk_delete(client, headers, [{"externalId": "x"}, *entries])
    body = response.get_json()
    assert (response.status_code, body["error"]["code"]) == (400, "invalid_request")
    assert sorted(body["error"]["details"]["contacts"]) == sorted(str(int(i) + 1) for i in bad)
    assert len(stored_contacts(db, tenant["id"])) == 2


@pytest.mark.parametrize(("body", "code"), [
    ({"contacts": []}, "batch_size"),
    ({"contacts": [{"id": 1}] * 1001}, "batch_size"),
    ({"contacts": {"id": 1}}, "invalid_request"),
    ({"contacts": [{"id": 1}], "atomic": True}, "invalid_request"),
    ([], "invalid_request"),
])
def test_bad_envelopes_get_a_stable_code(client, headers, body, code):
    response = client.post(DELETE_URL, json=body, headers=headers)
    assert (response.status_code, response.get_json()["error"]["code"]) == (400, code)


def test_deleting_needs_the_write_scope(client, headers, tenant, make_token):
    [contact_id] = seed(client, headers, [{"externalId": "a"}])
    reader = auth_headers(make_token(tenant, ("contacts:read",)))
    for response in (client.delete(f"/contacts/{contact_id}", headers=reader),
                     bulk_delete(client, reader, [{"id": contact_id}]),
                     client.delete(f"/v1/contacts/{contact_id}", headers=reader)):
        assert (response.status_code, response.get_json()["error"]["code"]) == (403, "insufficient_scope")
    assert client.get(f"/contacts/{contact_id}", headers=headers).status_code == 200


def test_autosend_deletes_by_id_and_by_user_id(client, headers, db, tenant):
    [by_id, by_user_id, kept] = seed(client, headers,
                                     [{"userId": "u1"}, {"userId": "user 2/x"}, {"userId": "u3"}])
    deleted = {"success": True, "message": "Contact deleted successfully"}
    response = client.delete(f"/v1/contacts/{by_id}", headers=headers)
    assert (response.status_code, response.get_json()) == (200, deleted)
    response = client.delete("/v1/contacts/email/userId/user%202/x", headers=headers)
    assert (response.status_code, response.get_json()) == (200, deleted)
    for path in (f"/v1/contacts/{by_id}", "/v1/contacts/abc123", "/v1/contacts/email/userId/u1",
                 "/v1/contacts/99999999999999999999999"):
        response = client.delete(path, headers=headers)
        assert (response.status_code, response.get_json()["error"]["code"]) == (404, "not_found"), path
    assert [c["id"] for c in stored_contacts(db, tenant["id"])] == [kept]
    assert by_user_id not in [c["id"] for c in stored_contacts(db, tenant["id"])]


def test_a_bulk_delete_replays_under_its_idempotency_key(client, headers, db, tenant):
    [first] = seed(client, headers, [{"email": "ann@example.com"}])
    key = {"Idempotency-Key": "delete-1"}
    response = bulk_delete(client, headers, [{"email": "ann@example.com"}, {"id": 424242}], **key)
    assert response.get_json()["data"]["deletedCount"] == 1
    [again] = seed(client, headers, [{"email": "ann@example.com"}])  # made anew since
    assert again != first
    replay = bulk_delete(client, headers, [{"email": "ann@example.com"}, {"id": 424242}], **key)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.data == response.data
    assert [c["id"] for c in stored_contacts(db, tenant["id"])] == [again]  # the replay deleted nothing
    one = client.delete(f"/contacts/{again}", headers={**headers, "Idempotency-Key": "delete-2"})
    replayed = client.delete(f"/contacts/{again}", headers={**headers, "Idempotency-Key": "delete-2"})
    assert (one.status_code, replayed.status_code) == (204, 204)
    assert replayed.headers["Idempotent-Replayed"] == "true"


def test_the_feed_shows_the_tombstone_then_the_contact_made_again(client, headers, db, tenant):
    [old] = seed(client, headers, [{"externalId": "crm-1", "email": "ann@example.com", "firstName": "Ann"}])
    _, cursor = follow_feed(client, headers, limit=10)
    assert bulk_delete(client, headers, [{"externalId": "crm-1"}]).get_json()["data"]["deletedCount"] == 1
    [new] = seed(client, headers, [{"externalId": "crm-1", "email": "ann@example.com"}])
    assert new != old
    page, _ = follow_feed(client, headers, cursor=cursor, limit=1)
    [tombstone] = db.execute("SELECT deleted_at FROM contact_tombstones").fetchall()
    assert page[0] == {"id": old, "externalId": "crm-1", "deleted": True,
                       "deletedAt": iso_timestamp(tombstone["deleted_at"])}
    assert [c["id"] for c in page[1:]] == [new]
    assert page[1]["email"] == "ann@example.com"
    everything, _ = follow_feed(client, headers, limit=100)  # from the start: the same order
    assert [c["id"] for c in everything] == [old, new]


def test_a_cursor_before_a_purged_tombstone_expires(app, client, headers, db, tenant):
    ids = seed(client, headers, [{"externalId": f"c{i}"} for i in range(3)])
    _, before = follow_feed(client, headers, limit=10)
    started = datetime.now().astimezone()
    assert client.delete(f"/contacts/{ids[0]}", headers=headers).status_code == 204
    _, after_first = follow_feed(client, headers, cursor=before, limit=10)
    assert client.delete(f"/contacts/{ids[1]}", headers=headers).status_code == 204
    db.execute("UPDATE contact_tombstones SET deleted_at = now() - interval '31 days' WHERE contact_id = %s",
               (ids[0],))
    purge(pool_of(app), DispatchSettings(backoff=(), timeout=1, allow_private=True))  # the upkeep
    assert [r["contact_id"] for r in db.execute("SELECT contact_id FROM contact_tombstones")] == [ids[1]]
    with pool_of(app).connection() as conn:
        assert purge_tombstones(conn, retention_days=30) == 0
    expired = client.get("/contacts", query_string={"cursor": before}, headers=headers)
    assert (expired.status_code, expired.get_json()["error"]["code"]) == (410, "cursor_expired")
    since = client.get("/contacts", query_string={"updatedSince": "2000-01-01T00:00:00Z"}, headers=headers)
    assert (since.status_code, since.get_json()["error"]["code"]) == (410, "cursor_expired")
    page, _ = follow_feed(client, headers, cursor=after_first, limit=10)  # after the purged one: fine
    assert [c["id"] for c in page] == [ids[1]]
    whole, _ = follow_feed(client, headers, limit=10)  # the whole feed rebuilds a copy
    assert [c["id"] for c in whole] == [ids[2], ids[1]]
    recent, _ = follow_feed(client, headers, updatedSince=started.isoformat(), limit=10)
    assert ids[1] in [c["id"] for c in recent]


def test_deleted_contacts_get_a_contact_deleted_event_and_lose_their_others(app, client, headers, db, tenant,
                                                                           make_webhook, receiver):
    secret = make_webhook(tenant, receiver.url)
    [gone, kept] = seed(client, headers, [{"externalId": "a", "email": "a@example.com"}, {"externalId": "b"}])
    post_bulk(client, headers, [{"externalId": "a", "firstName": "Ann"},
                                {"externalId": "b", "firstName": "Bo"}], runWorkflow=True)
    assert client.delete(f"/contacts/{gone}", headers=headers).status_code == 204  # no runWorkflow needed
    events = stored_events(db, tenant["id"])
    assert [(e["type"], e["contact_id"]) for e in events] == [("contact.updated", kept),
                                                              ("contact.deleted", gone)]
    tombstone = events[1]["contact"]
    assert set(tombstone) == {"id", "externalId", "deleted", "deletedAt"}
    settings = DispatchSettings(backoff=(0,), timeout=1, allow_private=True)
    while dispatch_one(pool_of(app), settings):
        pass
    bodies = {json.loads(r.body)["type"]: (r, json.loads(r.body)) for r in receiver.wait_for(2)}
    request, body = bodies["contact.deleted"]
    assert documented_verifier()(secret, request.headers, request.body)
    assert body["data"] == {"tenant": "acme", "contact": tombstone, "changedFields": []}


# Everything a contact's personal data could be copied into, searched row by
# row, column by column: text as stored, bytea decoded, and JSON-escaped forms.
PERSONAL = {"email": "zoë.personal@example.com", "firstName": "Zoë-Firstname", "lastName": "Lastname-Xq",
            "phone": "+15550109999", "username": "zoe-username-q"}
SECRET_ATTRIBUTE = "attribute-value-kq7"


def rows_holding(db, values: list[str]) -> dict[str, int]:
    """For every table of the schema: how many of its rows hold any of `values`."""
    forms = {form for value in values for form in (value, json.dumps(value)[1:-1], value.lower())}
    tables = [r["table_name"] for r in db.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        " AND table_type = 'BASE TABLE'").fetchall()]
    assert {"contacts", "webhook_events", "idempotency_keys", "batch_task_chunks"} <= set(tables)
    found = {}
    for table in tables:
        count = 0
        for row in db.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table))).fetchall():
            text = " ".join(value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                            for value in row.values())
            count += any(form in text for form in forms)
        if count:
            found[table] = count
    return found


def test_erasure_leaves_no_copy_of_the_contact_anywhere(app, client, headers, db, tenant, make_token,
                                                        make_webhook):
    make_webhook(tenant, "http://127.0.0.1:9/hooks")  # events are written, never sent here
    everything = auth_headers(make_token(tenant, ("contacts:read", "contacts:write", "jobs:read")))
    contact = {"externalId": "crm-erase", **PERSONAL, "attributes": {"plan": SECRET_ATTRIBUTE},
               "tags": {"add": ["vip"]}, "companies": [{"companyId": "co-1", "name": "Blue Sun"}]}
    created = client.post("/contacts", json={**contact, "runWorkflow": True},
                          headers={**everything, "Idempotency-Key": "single"})
    assert created.status_code == 201
    contact_id = created.get_json()["data"]["contact"]["id"]
    # A failure that echoes the address (the row is invalid for another reason), kept under a key ...
    echoed = post_bulk(client, {**everything, "Idempotency-Key": "echo"},
                       [{"email": PERSONAL["email"].upper(), "firstName": "x" * 300}])
    assert echoed.get_json()["data"]["failures"][0]["email"] == PERSONAL["email"].upper()
    # ... and in a batch task's outcomes.
    task = client.post("/contacts/bulk-update", json={"contacts": [
        {"email": PERSONAL["email"], "firstName": "y" * 300}, {"externalId": "other", "firstName": "Other"}]},
        headers={**everything, "Prefer": "respond-async"})
    assert task.status_code == 202
    drain(app)
    # The search finds every copy before (it would find one left behind) ...
    before = rows_holding(db, [*PERSONAL.values(), SECRET_ATTRIBUTE])
    assert {"contacts", "webhook_events", "idempotency_keys", "batch_task_chunks"} <= set(before)

    assert client.delete(f"/contacts/{contact_id}", headers=everything).status_code == 204

    # ... and none after, while the other contact and the task's other outcomes stay.
    assert rows_holding(db, [*PERSONAL.values(), SECRET_ATTRIBUTE]) == {}
    assert [c["external_id"] for c in stored_contacts(db, tenant["id"])] == ["other"]
    outcomes = client.get(f"/batch-tasks/{task.get_json()['data']['id']}/results", headers=everything)
    assert [(o["status"], o.get("email")) for o in outcomes.get_json()["data"]] == [
        ("failed", None), ("created", None)]
    assert db.execute("SELECT count(*) AS n FROM contact_companies").fetchone()["n"] == 0
    assert db.execute("SELECT count(*) AS n FROM companies").fetchone()["n"] == 1  # the catalogue stays
    # A key whose answer was forgotten runs again rather than replaying the contact.
    again = client.post("/contacts", json={**contact, "runWorkflow": True},
                        headers={**everything, "Idempotency-Key": "single"})
    assert again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") is None
    assert again.get_json()["data"]["contact"]["id"] != contact_id


def test_mentions_name_identities_and_contacts_not_bare_outcomes():
    answer = {"success": True, "data": {
        "results": [{"index": 0, "id": 5, "status": "created"}],
        "failures": [{"index": 1, "externalId": " X-1 ", "email": "A@B.C", "code": "identity_conflict",
                      "conflict": {"emailContactId": 9}}],
        "contact": {"id": 7, "externalId": None, "email": None, "username": "Jane"}}}
    assert mentions_of(answer) == ["email:a@b.c", "externalId:X-1", "id:7", "username:jane"]
    assert mentions_of(None) == [] and mentions_of({"data": {"id": 3}}) == []
    assert mentions_of({"failures": [{"email": "a\x00@b.c", "externalId": "\ud800"}]}) == []


FEED_WRITERS, FEED_IDENTITIES, FEED_SECONDS = 3, 40, 4.0


def test_a_reader_following_the_feed_mirrors_creates_updates_and_deletes(make_app, headers, db, tenant):
    """Writers create, update and delete overlapping contacts concurrently
    while a reader follows the feed in small pages, keeping a mirror: once
    they stop and the reader drains the feed, the mirror equals the table."""
    app = make_app(DB_POOL_MAX=FEED_WRITERS + 2)
    stop = threading.Event()
    errors: list[str] = []
    deletions = [0]

    def writer(seed: int) -> None:
        rng, client, n = random.Random(seed), app.test_client(), 0
        while not stop.is_set() and n < 400:  # bounded in count and in time
            n += 1
            picked = rng.sample(range(FEED_IDENTITIES), 8)
            if rng.random() < 0.4:
                response = bulk_delete(client, headers, [{"externalId": f"c{i}"} for i in picked])
                ok = response.status_code == 200
                deletions[0] += ok and response.get_json()["data"]["deletedCount"]
            else:
                response = post_bulk(client, headers, [{"externalId": f"c{i}", "attributes": {f"w{seed}": n}}
                                                       for i in picked])
                ok = response.status_code == 200 and response.get_json()["data"]["failedCount"] == 0
            if not ok:
                errors.append(str(response.get_json()))

    reader = app.test_client()
    mirror: dict[int, dict] = {}

    def follow(cursor: str | None) -> str:
        page, cursor = follow_feed(reader, headers, limit=7, **({"cursor": cursor} if cursor else {}))
        for item in page:
            if item.get("deleted"):
                mirror.pop(item["id"], None)
            else:
                mirror[item["id"]] = item
        return cursor

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(FEED_WRITERS)]
    for thread in threads:
        thread.start()
    cursor, deadline = None, time.monotonic() + FEED_SECONDS
    while time.monotonic() < deadline:
        cursor = follow(cursor)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    follow(cursor)
    table = {c["id"]: c for c in stored_contacts(db, tenant["id"])}
    assert deletions[0] > 10  # the run really deleted, and contacts were made again after
    assert set(mirror) == set(table)
    assert {i: mirror[i]["attributes"] for i in table} == {i: c["attributes"] for i, c in table.items()}


def test_an_id_beyond_bigint_is_simply_not_found(client, headers):
    """schemathesis found this one: the URL converter takes any integer, PostgreSQL does not."""
    response = client.delete(f"/contacts/{2 ** 63}", headers=headers)
    assert response.status_code == 404 and response.json["error"]["code"] == "not_found"
