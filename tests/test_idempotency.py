"""Idempotency-Key on the write doors (app/engine/idempotency.py, app/web/contacts.py):
a retry replays the first answer, applies nothing again and fires no event again."""

import threading
import time

import psycopg
import pytest

from app.config import load_config
from app.engine.idempotency import purge_expired_keys
from tests.support import auth_headers, stored_contacts, stored_events

DOORS = ["/contacts/bulk-update", "/v1/contacts/bulk-update", "/contacts/bulk"]


def send(client, headers, url, body, key="key-1"):
    return client.post(url, json=body, headers={**headers, "Idempotency-Key": key})


@pytest.mark.parametrize("url", DOORS)
def test_the_same_request_again_replays_the_first_answer_and_writes_nothing(client, headers, db,
                                                                             tenant, url):
    body = {"contacts": [{"externalId": "a", "email": "A@Example.com"}], "returnResults": True}
    first = send(client, headers, url, body)
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
    [before] = stored_contacts(db, tenant["id"])
    again = send(client, headers, url, body)
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_data() == first.get_data()  # "created", not "unchanged": nothing ran again
    assert stored_contacts(db, tenant["id"]) == [before]  # updated_at untouched


def test_a_replay_neither_undoes_a_later_change_nor_fires_an_event(client, headers, db, tenant,
                                                                    make_webhook):
    """A late retry of "set X" must not apply X over a newer "set Y" (which
    would also fire an event): it only gets its first answer back."""
    make_webhook(tenant, "http://127.0.0.1:9/hooks")
    set_x = {"contacts": [{"externalId": "a", "firstName": "X"}], "runWorkflow": True}
    set_y = {"contacts": [{"externalId": "a", "firstName": "Y"}], "runWorkflow": True}
    assert send(client, headers, "/contacts/bulk-update", set_x, key="x").status_code == 200
    assert send(client, headers, "/contacts/bulk-update", set_y, key="y").status_code == 200
    retry = send(client, headers, "/contacts/bulk-update", set_x, key="x")
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert [c["first_name"] for c in stored_contacts(db, tenant["id"])] == ["Y"]
    assert len(stored_events(db, tenant["id"])) == 2


def test_a_single_upsert_replays_its_201(client, headers, db, tenant):
    first = send(client, headers, "/contacts", {"externalId": "a", "firstName": "Al"})
    again = send(client, headers, "/contacts", {"externalId": "a", "firstName": "Al"})
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.get_data() == first.get_data() and again.headers["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize("second_url, second_body", [
    ("/contacts/bulk-update", {"contacts": [{"externalId": "b"}]}),    # another body
    ("/contacts/bulk", {"contacts": [{"externalId": "a"}]}),           # another path
    ("/contacts/bulk-update", "not even JSON"),                        # a body we cannot parse
])
def test_the_same_key_for_another_request_is_422(client, headers, db, tenant, second_url, second_body):
    first = send(client, headers, "/contacts/bulk-update", {"contacts": [{"externalId": "a"}]})
    assert first.status_code == 200
    if isinstance(second_body, str):
        response = client.post(second_url, data=second_body, content_type="application/json",
                               headers={**headers, "Idempotency-Key": "key-1"})
    else:
        response = send(client, headers, second_url, second_body)
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "idempotency_key_reused"
    assert [c["external_id"] for c in stored_contacts(db, tenant["id"])] == ["a"]


@pytest.mark.parametrize("url, bad_body", [
    ("/contacts/bulk-update", {"contacts": []}),                                  # 400 batch_size
    ("/contacts/bulk", {"contacts": [{"externalId": "a"}, {"email": "bad@"}]}),   # 400 all-or-nothing
    ("/contacts", {"externalId": "a", "email": "bad@"}),                          # 400 invalid row
])
def test_a_failed_request_stores_nothing_so_the_key_can_be_used_again(client, headers, db, tenant,
                                                                      url, bad_body):
    assert send(client, headers, url, bad_body).status_code == 400
    fixed = {"externalId": "a"} if url == "/contacts" else {"contacts": [{"externalId": "a"}]}
    retried = send(client, headers, url, fixed)
    assert retried.status_code in (200, 201) and "Idempotent-Replayed" not in retried.headers
    assert [c["external_id"] for c in stored_contacts(db, tenant["id"])] == ["a"]


def test_a_conflict_stores_nothing_either(client, headers, db, tenant):
    send(client, headers, "/contacts", {"externalId": "a", "email": "a@example.com"}, key="k0")
    send(client, headers, "/contacts", {"externalId": "b", "email": "b@example.com"}, key="k1")
    conflict = send(client, headers, "/contacts", {"externalId": "a", "email": "b@example.com"}, key="k2")
    assert conflict.status_code == 409
    assert db.execute("SELECT count(*) AS n FROM idempotency_keys WHERE key = 'k2'").fetchone()["n"] == 0


def test_a_second_request_while_the_first_runs_is_409_then_replays(make_app, headers, db, tenant,
                                                                   database_url):
    """The first request waits on a row lock held elsewhere, inside its
    transaction and so holding its key; the second is told, not queued."""
    app = make_app(DB_POOL_MAX=4)
    body = {"contacts": [{"externalId": "a", "firstName": "New"}]}
    send(app.test_client(), headers, "/contacts/bulk-update", {"contacts": [{"externalId": "a"}]},
         key="seed")
    answers: list = []
    with psycopg.connect(database_url) as blocker:
        blocker.execute("SELECT 1 FROM contacts WHERE external_id = 'a' FOR UPDATE")
        first = threading.Thread(target=lambda: answers.append(
            send(app.test_client(), headers, "/contacts/bulk-update", body)))
        first.start()
        deadline = time.monotonic() + 10
        while not db.execute("SELECT 1 FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted"
                             ).fetchone():
            assert time.monotonic() < deadline, "the first request never reached its row lock"
            time.sleep(0.02)
        second = send(app.test_client(), headers, "/contacts/bulk-update", body)
        assert second.status_code == 409
        assert second.get_json()["error"]["code"] == "idempotency_key_in_progress"
        blocker.rollback()
    first.join(timeout=30)
    assert answers[0].status_code == 200
    third = send(app.test_client(), headers, "/contacts/bulk-update", body)
    assert third.headers["Idempotent-Replayed"] == "true" and third.get_data() == answers[0].get_data()


def test_keys_belong_to_a_tenant(client, headers, db, tenant, make_tenant, make_token):
    other = auth_headers(make_token(make_tenant("globex")))
    body = {"contacts": [{"externalId": "a"}]}
    send(client, headers, "/contacts/bulk-update", body)
    theirs = send(client, other, "/contacts/bulk-update", body)
    assert theirs.status_code == 200 and "Idempotent-Replayed" not in theirs.headers


def test_an_expired_key_is_a_new_request_and_is_purged(client, headers, db, tenant):
    body = {"contacts": [{"externalId": "a", "firstName": "One"}]}
    send(client, headers, "/contacts/bulk-update", body)
    db.execute("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
    again = send(client, headers, "/contacts/bulk-update", body)
    assert "Idempotent-Replayed" not in again.headers
    assert again.get_json()["data"]["unchangedCount"] == 1  # it ran again
    db.execute("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
    assert purge_expired_keys(db) == 1
    assert db.execute("SELECT count(*) AS n FROM idempotency_keys").fetchone()["n"] == 0


def test_a_key_of_255_characters_is_taken(client, headers):
    response = send(client, headers, "/contacts/bulk-update", {"contacts": [{"externalId": "a"}]},
                    key="k" * 255)
    assert response.status_code == 200


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\tkey"])
def test_a_malformed_key_is_invalid_request(client, headers, key):
    response = client.post("/contacts/bulk-update", json={"contacts": [{"externalId": "a"}]},
                           headers={**headers, "Idempotency-Key": key})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_request"


def test_the_ttl_takes_seconds_or_a_duration():
    assert load_config({})["IDEMPOTENCY_TTL_SECONDS"] == 86400
    for raw, seconds in (("90", 90), ("15m", 900), ("24h", 86400), ("7d", 604800)):
        assert load_config({"CONTACTSYNC_IDEMPOTENCY_TTL": raw})["IDEMPOTENCY_TTL_SECONDS"] == seconds
    for raw in ("0", "1w", "-5", "soon", "1000000000d"):
        with pytest.raises(ValueError):
            load_config({"CONTACTSYNC_IDEMPOTENCY_TTL": raw})
