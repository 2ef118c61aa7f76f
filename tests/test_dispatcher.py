"""The dispatcher (app/workers/dispatcher.py) delivering outbox events to a real receiver on 127.0.0.1.

In-process tests drive `dispatch_one` step by step; the process tests run
the real `flask --app app workflows run`, kill it, and run two at once.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.db import pool_of
from app.engine.outbox import iso_timestamp
from app.workers.dispatcher import DispatchSettings, dispatch_one, purge
from tests.receiver import Answer
from tests.support import auth_headers, post_bulk, stored_contacts, stored_events
from tests.test_webhooks import documented_verifier

ROOT = Path(__file__).resolve().parent.parent

# No waiting between attempts in-process: the schedule's length is what is tested.
FAST = DispatchSettings(backoff=(0, 0), timeout=1, allow_private=True, poll_seconds=0.05)


def drain(app, settings: DispatchSettings = FAST) -> int:
    """Run dispatch steps until no event is due; return how many attempts were made."""
    pool = pool_of(app)
    attempts = 0
    while dispatch_one(pool, settings):
        attempts += 1
    return attempts


@pytest.fixture
def secret(tenant, make_webhook, receiver) -> str:
    return make_webhook(tenant, receiver.url)


def test_an_event_arrives_signed_with_the_documented_body(app, client, headers, db, tenant, secret,
                                                         receiver):
    post_bulk(client, headers, [{"externalId": "crm-1", "email": "Alice@Example.com",
                                 "firstName": "Alice", "attributes": {"plan": "pro"}}],
              runWorkflow=True)
    assert drain(app) == 1
    [request] = receiver.requests
    assert documented_verifier()(secret, request.headers, request.body)
    body = json.loads(request.body)
    assert list(body) == ["type", "timestamp", "data"]
    assert body["type"] == "contact.created"
    assert body["timestamp"] == body["data"]["contact"]["createdAt"]  # written with the contact
    [stored] = stored_contacts(db, tenant["id"])
    assert body["data"] == {
        "tenant": "acme",
        "contact": {"id": stored["id"], "externalId": "crm-1", "email": "alice@example.com",
                    "username": None, "firstName": "Alice", "lastName": None, "name": None,
                    "phone": None, "locale": None, "optIn": None, "status": "auto", "ownerId": None,
                    "avatarUrl": None, "attributes": {"plan": "pro"}, "sourceUpdatedAt": None,
                    "tags": [], "folders": [],
                    "companies": [],
                    "createdAt": iso_timestamp(stored["created_at"]),
                    "updatedAt": iso_timestamp(stored["updated_at"])},
        "changedFields": ["externalId", "email", "firstName", "attributes"],
    }
    [event] = stored_events(db, tenant["id"])
    assert request.headers["webhook-id"] == event["event_id"]
    assert (event["status"], event["attempts"]) == ("delivered", 1)
    assert drain(app) == 0  # delivered events are not sent again


def test_failed_attempts_are_retried_with_the_same_webhook_id(app, client, headers, db, tenant,
                                                              secret, receiver):
    receiver.answer(Answer(500), Answer(200, delay=3))  # a server error, then a timeout, then 200
    post_bulk(client, headers, [{"externalId": "a"}], runWorkflow=True)
    assert drain(app) == 3
    requests = receiver.wait_for(3)
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    assert all(documented_verifier()(secret, r.headers, r.body) for r in requests)
    assert len({r.body for r in requests}) == 1  # the same event each time
    [event] = stored_events(db, tenant["id"])
    assert (event["status"], event["attempts"], event["last_error"]) == ("delivered", 3, None)


def test_an_event_is_dead_after_the_last_attempt_of_the_schedule(app, client, headers, db, tenant,
                                                                 secret, receiver):
    receiver.answer(*[Answer(503)] * 5)
    post_bulk(client, headers, [{"externalId": "a"}], runWorkflow=True)
    assert drain(app) == 1 + len(FAST.backoff)
    [event] = stored_events(db, tenant["id"])
    assert (event["status"], event["attempts"], event["last_error"]) == ("dead", 3, "HTTP 503")
    assert len(receiver.requests) == 3


def test_a_failed_attempt_waits_its_backoff(app, client, headers, db, tenant, secret, receiver):
    receiver.answer(Answer(500))
    post_bulk(client, headers, [{"externalId": "a"}], runWorkflow=True)
    assert drain(app, DispatchSettings(backoff=(3600,), timeout=1, allow_private=True)) == 1
    [event] = stored_events(db, tenant["id"])
    assert (event["status"], event["attempts"]) == ("pending", 1)
    due_in = db.execute("SELECT extract(epoch FROM next_attempt_at - now()) AS s"
                        " FROM webhook_events").fetchone()["s"]
    assert 3500 < due_in <= 3600


def test_an_event_whose_claims_never_settled_is_dead_once_its_attempts_are_used(
        app, client, headers, db, tenant, secret, receiver):
    """Dispatchers that died mid-attempt (say, on an event that kills them) used
    up its attempts: it is not sent again, and so cannot kill another."""
    post_bulk(client, headers, [{"externalId": "a"}], runWorkflow=True)
    db.execute("UPDATE webhook_events SET attempts = %s", (FAST.max_attempts,))
    assert drain(app) == 1
    assert receiver.requests == []
    [event] = stored_events(db, tenant["id"])
    assert event["status"] == "dead" and "attempts used up" in event["last_error"]


def test_a_bug_while_sending_fails_the_attempt_and_the_schedule_goes_on(app, client, headers, db,
                                                                        tenant, secret, receiver,
                                                                        monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("app.workers.webhooks.deliver", broken)
    post_bulk(client, headers, [{"externalId": "a"}], runWorkflow=True)
    assert dispatch_one(pool_of(app), FAST)
    [event] = stored_events(db, tenant["id"])
    assert (event["status"], event["attempts"]) == ("pending", 1)
    assert event["last_error"] == "internal error: RuntimeError"
    monkeypatch.undo()
    assert drain(app) == 1
    assert stored_events(db, tenant["id"])[0]["status"] == "delivered"


def test_a_private_destination_is_refused_at_delivery_without_the_opt_in(app, client, headers, db,
                                                                         tenant, secret, receiver):
    post_bulk(client, headers, [{"externalId": "a"}], runWorkflow=True)
    strict = DispatchSettings(backoff=(), timeout=1, allow_private=False)
    assert drain(app, strict) == 1
    assert receiver.requests == []
    [event] = stored_events(db, tenant["id"])
    assert event["status"] == "dead" and event["last_error"].startswith("refused:")


def test_a_disabled_webhook_holds_its_events_until_enabled_again(app, client, headers, db, tenant,
                                                                 secret, receiver, make_app):
    post_bulk(client, headers, [{"externalId": "a"}], runWorkflow=True)
    runner = make_app(WEBHOOK_ALLOW_PRIVATE=True).test_cli_runner()
    assert runner.invoke(args=["tenants", "set-webhook", "acme", "--disable"]).exit_code == 0
    assert drain(app) == 0
    assert stored_events(db, tenant["id"])[0]["status"] == "pending"
    enabled = runner.invoke(args=["tenants", "set-webhook", "acme"])
    assert enabled.exit_code == 0 and "whsec_" not in enabled.output  # the same secret
    assert drain(app) == 1
    assert documented_verifier()(secret, receiver.requests[0].headers, receiver.requests[0].body)


def test_each_tenant_gets_its_own_events_signed_with_its_own_secret(app, client, headers, db, tenant,
                                                                   secret, receiver, make_tenant,
                                                                   make_token, make_webhook):
    other = make_tenant("globex")
    other_secret = make_webhook(other, receiver.url)
    post_bulk(client, headers, [{"externalId": "a"}], runWorkflow=True)
    post_bulk(client, auth_headers(make_token(other)), [{"externalId": "b"}], runWorkflow=True)
    assert drain(app) == 2
    by_tenant = {json.loads(r.body)["data"]["tenant"]: r for r in receiver.requests}
    verify = documented_verifier()
    assert verify(secret, by_tenant["acme"].headers, by_tenant["acme"].body)
    assert verify(other_secret, by_tenant["globex"].headers, by_tenant["globex"].body)
    assert not verify(secret, by_tenant["globex"].headers, by_tenant["globex"].body)


def start_dispatcher(database_url: str, threads: int = 2, timeout: int = 2) -> subprocess.Popen:
    """The real `flask --app app workflows run`; its lease is `timeout` + 5 s."""
    env = {**os.environ, "DATABASE_URL": database_url, "CONTACTSYNC_WEBHOOK_ALLOW_PRIVATE": "1",
           "CONTACTSYNC_WEBHOOK_TIMEOUT": str(timeout), "CONTACTSYNC_WEBHOOK_BACKOFF": "1,1"}
    return subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "workflows", "run",
                             "--threads", str(threads)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def event_statuses(db, tenant_id: int) -> list[str]:
    return [e["status"] for e in stored_events(db, tenant_id)]


def test_an_event_whose_dispatcher_was_killed_mid_delivery_is_delivered_by_the_next(
        database_url, client, headers, db, tenant, secret, receiver):
    receiver.answer(Answer(200, delay=30))  # the first delivery hangs until its sender dies
    post_bulk(client, headers, [{"externalId": "a"}], runWorkflow=True)
    first = start_dispatcher(database_url)
    try:
        receiver.wait_for(1)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        first.kill()
    second = start_dispatcher(database_url)
    try:
        requests = receiver.wait_for(2, timeout=20)  # once the dead one's lease (7 s) runs out
        wait_until(lambda: event_statuses(db, tenant["id"]) == ["delivered"])
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=15) == 0  # a clean stop
    assert requests[0].headers["webhook-id"] == requests[1].headers["webhook-id"]
    assert stored_events(db, tenant["id"])[0]["attempts"] == 2


def test_two_dispatchers_at_once_deliver_each_event_once(database_url, client, headers, db, tenant,
                                                        secret, receiver):
    contacts = [{"externalId": f"crm-{i}"} for i in range(200)]
    post_bulk(client, headers, contacts, runWorkflow=True)
    # A long lease, so that a thread the busy machine leaves waiting between
    # claim and settle does not legitimately hand its event to the other.
    dispatchers = [start_dispatcher(database_url, threads=3, timeout=20) for _ in range(2)]
    try:
        wait_until(lambda: set(event_statuses(db, tenant["id"])) == {"delivered"})
    finally:
        for dispatcher in dispatchers:
            dispatcher.send_signal(signal.SIGTERM)
        assert [d.wait(timeout=15) for d in dispatchers] == [0, 0]
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert len(ids) == 200 and len(set(ids)) == 200
    assert {e["attempts"] for e in stored_events(db, tenant["id"])} == {1}


def test_finished_events_are_purged_after_the_retention(app, client, headers, db, tenant, secret,
                                                         receiver):
    post_bulk(client, headers, [{"externalId": f"c{i}"} for i in range(4)], runWorkflow=True)
    assert drain(app) == 4
    events = stored_events(db, tenant["id"])
    old_delivered, old_dead, recent, pending = (e["event_id"] for e in events)
    db.execute("UPDATE webhook_events SET status = 'dead' WHERE event_id = %s", (old_dead,))
    db.execute("UPDATE webhook_events SET finished_at = now() - interval '8 days'"
               " WHERE event_id = ANY(%s)", ([old_delivered, old_dead],))
    db.execute("UPDATE webhook_events SET status = 'pending', finished_at = NULL,"
               " created_at = now() - interval '30 days' WHERE event_id = %s", (pending,))
    purge(pool_of(app), DispatchSettings(backoff=(), timeout=1,
                                                               allow_private=True, retention_days=7))
    assert sorted(e["event_id"] for e in stored_events(db, tenant["id"])) == sorted([recent, pending])
