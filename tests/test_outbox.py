"""The workflow outbox (DESIGN 4.5): events are written with the upsert, and only for real changes."""

import re

import pytest

from app.engine.outbox import enqueue_contact_events, iso_timestamp
from app.engine.upsert import upsert_contacts
from tests.support import auth_headers, in_app_transaction, post_bulk, stored_contacts, stored_events

WEBHOOK_URL = "http://127.0.0.1:9/hooks"  # never called here: these tests only read the outbox


@pytest.fixture
def webhook(tenant, make_webhook) -> str:
    return make_webhook(tenant, WEBHOOK_URL)


def seed(client, headers) -> None:
    contacts = [{"externalId": "b", "email": "b@example.com", "firstName": "Bea"},
                {"externalId": "c", "email": "c@example.com", "firstName": "Cy"}]
    assert post_bulk(client, headers, contacts).status_code == 200


def test_created_and_updated_contacts_get_one_event_each(client, headers, db, tenant, webhook):
    seed(client, headers)
    contacts = [
        {"externalId": "a", "email": "A@Example.com", "attributes": {"plan": "pro"}},  # created
        {"externalId": "b", "firstName": "Beatrice"},                                   # updated
        {"externalId": "c", "firstName": "Cy"},                                         # unchanged
        {"externalId": "d", "email": "bad@"},                                           # invalid
        {"externalId": "c", "email": "b@example.com"},                                  # conflict
        {"externalId": "a", "lastName": "Later"},          # the contact row 0 created, again
    ]
    response = post_bulk(client, headers, contacts, runWorkflow=True)
    assert response.status_code == 200
    assert response.get_json()["data"]["failedCount"] == 2

    events = stored_events(db, tenant["id"])
    by_contact = {e["contact"]["externalId"]: e for e in events}
    assert sorted(by_contact) == ["a", "b"] and len(events) == 2
    created, updated = by_contact["a"], by_contact["b"]
    assert created["type"] == "contact.created"
    assert created["changed_fields"] == ["externalId", "email", "lastName", "attributes"]
    assert updated["type"] == "contact.updated"
    assert updated["changed_fields"] == ["firstName"]
    assert all(e["status"] == "pending" and e["event_id"].startswith("msg_") for e in events)
    assert len({e["event_id"] for e in events}) == 2


def test_an_event_carries_the_contact_as_the_request_left_it(client, headers, db, tenant, webhook):
    post_bulk(client, headers, [{"externalId": "a", "email": "A@Example.com", "firstName": "Al",
                                 "attributes": {"seats": 5}}], runWorkflow=True)
    [event] = stored_events(db, tenant["id"])
    [stored] = stored_contacts(db, tenant["id"])
    contact = event["contact"]
    assert list(contact) == ["id", "externalId", "email", "username", "firstName", "lastName", "name",
                             "phone", "locale", "optIn", "status", "ownerId", "avatarUrl", "attributes",
                             "sourceUpdatedAt", "tags", "folders", "companies", "createdAt", "updatedAt"]
    assert contact["id"] == stored["id"] == event["contact_id"]
    assert (contact["email"], contact["firstName"], contact["attributes"]) == \
        ("a@example.com", "Al", {"seats": 5})
    assert contact["updatedAt"] == iso_timestamp(stored["updated_at"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", contact["createdAt"])


@pytest.mark.parametrize("options", [{}, {"runWorkflow": False}])
def test_no_events_without_run_workflow(client, headers, db, tenant, webhook, options):
    post_bulk(client, headers, [{"externalId": "a"}], **options)
    assert len(stored_contacts(db, tenant["id"])) == 1
    assert stored_events(db, tenant["id"]) == []


def test_unchanged_rows_fire_nothing(client, headers, db, tenant, webhook):
    seed(client, headers)
    again = post_bulk(client, headers, [{"externalId": "b", "firstName": "Bea"}], runWorkflow=True)
    assert again.get_json()["data"]["unchangedCount"] == 1
    assert stored_events(db, tenant["id"]) == []


@pytest.mark.parametrize("url, options", [
    ("/contacts/bulk-update", {"atomic": True}),
    ("/contacts/bulk", {}),
])
def test_a_request_that_fails_writes_no_event(client, headers, db, tenant, webhook, url, options):
    contacts = [{"externalId": "a"}, {"externalId": "b", "email": "bad@"}]
    response = post_bulk(client, headers, contacts, url=url, runWorkflow=True, **options)
    assert response.status_code == 400
    assert stored_contacts(db, tenant["id"]) == []
    assert stored_events(db, tenant["id"]) == []


def test_events_roll_back_with_their_transaction(app, client, headers, db, tenant, webhook):
    """The events are part of the request's transaction: undone with it."""
    class Abort(Exception):
        pass

    def write_then_fail(conn):
        batch = upsert_contacts(conn, tenant["id"], [(0, {"external_id": "a"})])
        assert enqueue_contact_events(conn, tenant["id"], batch.written) == 1
        raise Abort

    with pytest.raises(Abort):
        in_app_transaction(app, write_then_fail)
    assert stored_contacts(db, tenant["id"]) == []
    assert stored_events(db, tenant["id"]) == []


def test_no_events_while_the_tenant_has_no_enabled_webhook(client, headers, db, tenant, make_app):
    post_bulk(client, headers, [{"externalId": "a"}], runWorkflow=True)
    assert stored_events(db, tenant["id"]) == []  # no webhook set: nobody to tell

    runner = make_app(WEBHOOK_ALLOW_PRIVATE=True).test_cli_runner()
    assert runner.invoke(args=["tenants", "set-webhook", "acme", WEBHOOK_URL]).exit_code == 0
    post_bulk(client, headers, [{"externalId": "b"}], runWorkflow=True)
    assert len(stored_events(db, tenant["id"])) == 1  # enabled: written
    assert runner.invoke(args=["tenants", "set-webhook", "acme", "--disable"]).exit_code == 0
    post_bulk(client, headers, [{"externalId": "c"}], runWorkflow=True)
    assert [e["contact"]["externalId"] for e in stored_events(db, tenant["id"])] == ["b"]


def test_tenants_do_not_get_each_others_events(client, headers, db, tenant, webhook, make_tenant,
                                               make_token, make_webhook):
    other = make_tenant("globex")
    make_webhook(other, WEBHOOK_URL)
    post_bulk(client, auth_headers(make_token(other)), [{"externalId": "a"}], runWorkflow=True)
    assert stored_events(db, tenant["id"]) == []
    assert [e["contact"]["externalId"] for e in stored_events(db, other["id"])] == ["a"]


def test_a_change_of_relations_is_named_in_the_event_with_the_whole_contact(client, headers, db, tenant,
                                                                           webhook):
    assert post_bulk(client, headers, [{"externalId": "a", "tags": {"add": ["vip"]}}]).status_code == 200
    post_bulk(client, headers, [
        {"externalId": "a", "tags": {"add": ["VIP", "new"]}, "username": "Ann",
         "companies": [{"companyId": "6", "name": "Blue Sun"}], "folders": {"remove": ["none"]}},
    ], runWorkflow=True)
    [event] = stored_events(db, tenant["id"])
    assert event["changed_fields"] == ["username", "tags", "companies"]
    assert [t["name"] for t in event["contact"]["tags"]] == ["vip", "new"]
    assert event["contact"]["companies"] == [{"companyId": "6", "name": "Blue Sun"}]
    assert event["contact"]["username"] == "ann"
