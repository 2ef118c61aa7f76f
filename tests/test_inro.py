"""Inrō's door (DESIGN 11, seed 000): updates by id, username or email as a
batch task, with the unmatched identifiers answered at once."""

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from tests.support import BULK_URL, auth_headers, drain, stored_contacts

INRO_URL = "/api/v1/contacts/bulk"


@pytest.fixture
def headers(tenant: dict, make_token: Callable[..., str]) -> dict[str, str]:
    return auth_headers(make_token(tenant, ("contacts:read", "contacts:write", "jobs:read")))


@pytest.fixture
def contacts(client: FlaskClient, headers: dict[str, str]) -> list[dict]:
    """Three contacts: one to find by id, one by username, one by email."""
    rows = [{"externalId": "crm-1", "email": "one@example.com"},
            {"email": "two@example.com", "username": "Jane_Doe"},
            {"email": "alice@example.com", "attributes": {"plan": "free", "seats": 2}}]
    response = client.post(BULK_URL, json={"contacts": rows, "returnResults": True}, headers=headers)
    return [{"id": r["id"]} for r in response.get_json()["data"]["results"]]


def contacts_by_email(db, tenant: dict) -> tuple[dict, dict, dict]:
    """The three contacts of the fixture, in its order (ids follow another order)."""
    stored = {c["email"]: c for c in stored_contacts(db, tenant["id"])}
    return stored["one@example.com"], stored["two@example.com"], stored["alice@example.com"]


def make_folders(client: FlaskClient, headers: dict[str, str], *names: str) -> list[int]:
    return [client.post("/folders", json={"name": name}, headers=headers).get_json()["data"]["id"]
            for name in names]


def test_the_seed_example_queues_the_matched_entries_and_names_the_unmatched(
        app, client, headers, contacts, db, tenant):
    [hot] = make_folders(client, headers, "Hot Prospects")
    body = {"contacts": [
        {"id": contacts[0]["id"], "contact": {"phone": "+15550000001", "folder_ids": [hot]}},
        {"username": "jane_doe", "contact": {"custom_properties": {"plan": "pro"}}},
        {"email": "Alice@Example.com", "contact": {"status": "optout"}},
        {"email": "nobody@example.com", "contact": {"status": "optout"}},
    ]}
    response = client.put(INRO_URL, json=body, headers=headers)
    assert response.status_code == 202
    answer = response.get_json()
    assert answer == {"batch_task_id": answer["batch_task_id"], "status": "pending", "accepted_count": 3,
                      "not_found_count": 1, "not_found": [{"email": "nobody@example.com"}]}

    drain(app)
    one, two, alice = contacts_by_email(db, tenant)
    assert (one["phone"], one["folders"]) == ("+15550000001", ["Hot Prospects"])
    assert two["attributes"] == {"plan": "pro"}
    assert (alice["status"], alice["attributes"]) == ("optout", {"plan": "free", "seats": 2})

    task = client.get(f"/api/v1/batch_tasks/{answer['batch_task_id']}", headers=headers).get_json()
    assert task["status"] == "completed" and task["progress_percentage"] == 100
    assert (task["total_count"], task["processed_count"], task["failed_count"]) == (3, 3, 0)
    assert task["completed_at"] is not None and task["id"] == answer["batch_task_id"]
    listed = client.get("/api/v1/batch_tasks", headers=headers).get_json()["batch_tasks"]
    assert [t["id"] for t in listed] == [answer["batch_task_id"]]


def test_folder_ids_are_the_exact_set_and_an_unknown_folder_fails_its_entry(
        app, client, headers, contacts, db, tenant):
    a, b, c = make_folders(client, headers, "A", "B", "C")
    first = [{"id": contacts[0]["id"], "contact": {"folder_ids": [a, b]}}]
    client.put(INRO_URL, json={"contacts": first}, headers=headers)
    second = [{"id": contacts[0]["id"], "contact": {"folder_ids": [c, b]}},
              {"id": contacts[1]["id"], "contact": {"folder_ids": [a, 999_999], "name": "Jane"}}]
    task_id = client.put(INRO_URL, json={"contacts": second}, headers=headers).get_json()["batch_task_id"]
    drain(app)
    one, two, _ = contacts_by_email(db, tenant)
    assert one["folders"] == ["B", "C"]
    assert (two["folders"], two["name"]) == ([], None)  # the entry failed whole
    results = client.get(f"/batch-tasks/{task_id}/results", headers=headers).get_json()["data"]
    assert [r["status"] for r in results] == ["updated", "failed"]
    assert (results[1]["code"], results[1]["errors"]) == ("unknown_folder", {"folder_ids": [999_999]})


def test_an_update_never_creates_and_a_contact_gone_since_fails_alone(
        app, client, headers, contacts, db, tenant):
    body = {"contacts": [{"id": contacts[0]["id"], "contact": {"name": "Gone"}},
                         {"id": contacts[1]["id"], "contact": {"name": "Here"}}]}
    task_id = client.put(INRO_URL, json=body, headers=headers).get_json()["batch_task_id"]
    db.execute("DELETE FROM contacts WHERE id = %s", (contacts[0]["id"],))
    drain(app)
    names = {c["email"]: c["name"] for c in stored_contacts(db, tenant["id"])}
    assert names == {"two@example.com": "Here", "alice@example.com": None}
    results = client.get(f"/batch-tasks/{task_id}/results", headers=headers).get_json()["data"]
    assert [(r["status"], r.get("code")) for r in results] == [("failed", "not_found"), ("updated", None)]


def test_an_email_change_onto_another_contacts_address_is_a_conflict(app, client, headers, contacts):
    body = {"contacts": [{"id": contacts[0]["id"], "contact": {"email": "two@example.com"}}]}
    task_id = client.put(INRO_URL, json=body, headers=headers).get_json()["batch_task_id"]
    drain(app)
    [result] = client.get(f"/batch-tasks/{task_id}/results", headers=headers).get_json()["data"]
    assert result["code"] == "identity_conflict"
    assert result["conflict"]["emailContactId"] == contacts[1]["id"]


def test_every_entry_unknown_still_gets_a_completed_task(client, headers, contacts):
    body = {"contacts": [{"id": 999_999, "contact": {"name": "x"}}, {"username": "ghost", "contact": {}}]}
    answer = client.put(INRO_URL, json=body, headers=headers).get_json()
    assert (answer["status"], answer["accepted_count"], answer["not_found_count"]) == ("completed", 0, 2)
    assert answer["not_found"] == [{"id": 999_999}, {"username": "ghost"}]
    task = client.get(f"/api/v1/batch_tasks/{answer['batch_task_id']}", headers=headers).get_json()
    assert (task["status"], task["total_count"], task["progress_percentage"]) == ("completed", 0, 100)


def test_bad_entries_are_named_by_index_and_nothing_is_queued(client, headers, contacts, db):
    body = {"contacts": [
        {"id": contacts[0]["id"], "contact": {"status": "active"}},
        {"contact": {"name": "no identifier"}},
        {"id": 1, "email": "a@example.com", "contact": {}},
        {"id": contacts[0]["id"], "contact": {"name": "fine"}},
        {"email": "x@example.com", "contact": {"firstName": "not an Inrō field"}},
        {"username": "jane_doe"},
    ]}
    response = client.put(INRO_URL, json=body, headers=headers)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_request"
    problems = error["details"]["contacts"]
    assert sorted(problems) == ["0", "1", "2", "4", "5"]
    assert "status" in problems["0"]["contact"]
    assert "firstName" in problems["4"]["contact"]
    assert "contact" in problems["5"]
    assert db.execute("SELECT count(*) AS n FROM batch_tasks").fetchone()["n"] == 0


def test_the_request_limits(client, headers):
    empty = client.put(INRO_URL, json={"contacts": []}, headers=headers)
    assert empty.status_code == 400 and empty.get_json()["error"]["code"] == "batch_size"
    too_many = {"contacts": [{"id": i + 1, "contact": {}} for i in range(1001)]}
    assert client.put(INRO_URL, json=too_many, headers=headers).get_json()["error"]["code"] == "batch_size"
    no_token = client.put(INRO_URL, json={"contacts": [{"id": 1, "contact": {}}]})
    assert no_token.status_code == 401


def test_tasks_of_another_tenant_are_not_found(client, headers, contacts, make_tenant, make_token):
    body = {"contacts": [{"id": contacts[0]["id"], "contact": {"name": "x"}}]}
    task_id = client.put(INRO_URL, json=body, headers=headers).get_json()["batch_task_id"]
    other = auth_headers(make_token(make_tenant("other"), ("jobs:read", "contacts:write")))
    assert client.get(f"/api/v1/batch_tasks/{task_id}", headers=other).status_code == 404
    assert client.get("/api/v1/batch_tasks", headers=other).get_json() == {"batch_tasks": []}
    # An id of another tenant's contact matches nothing either.
    answer = client.put(INRO_URL, json=body, headers=other).get_json()
    assert answer["not_found"] == [{"id": contacts[0]["id"]}]


def test_an_older_update_through_inros_door_is_stale(app, client, headers, contacts, db, tenant):
    def update(name: str, at: str) -> str:
        body = {"contacts": [{"id": contacts[0]["id"],
                              "contact": {"name": name, "source_updated_at": at}}]}
        return client.put(INRO_URL, json=body, headers=headers).get_json()["batch_task_id"]

    update("New", "2026-12-04T10:00:00Z")
    older = update("Old", "2026-12-04T09:00:00Z")
    drain(app)
    one, _, _ = contacts_by_email(db, tenant)
    assert one["name"] == "New"
    [result] = client.get(f"/batch-tasks/{older}/results", headers=headers).get_json()["data"]
    assert result["status"] == "stale"


def test_ids_beyond_a_bigint_are_bad_entries(client, headers, contacts):
    body = {"contacts": [{"id": 2 ** 70, "contact": {}},
                         {"id": contacts[0]["id"], "contact": {"folder_ids": [2 ** 64]}}]}
    response = client.put(INRO_URL, json=body, headers=headers)
    assert response.status_code == 400
    assert sorted(response.get_json()["error"]["details"]["contacts"]) == ["0", "1"]


def test_a_request_of_unknown_entries_still_announces_its_task(client, headers, tenant, receiver,
                                                                make_webhook, db):
    make_webhook(tenant, receiver.url)
    answer = client.put(INRO_URL, json={"contacts": [{"email": "ghost@example.com", "contact": {}}]},
                        headers=headers).get_json()
    [event] = db.execute("SELECT type, batch_task FROM webhook_events").fetchall()
    assert event["type"] == "batch_task.completed"
    assert str(event["batch_task"]["id"]) == answer["batch_task_id"]
