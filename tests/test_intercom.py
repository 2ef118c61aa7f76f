"""Intercom's door (DESIGN 12): bulk contact jobs under /intercom, through a
real gunicorn on 127.0.0.1 and a real task worker (`flask --app app tasks
run`), started by each test when it wants its tasks applied.

Intercom's own examples (/tmp/intercom.yaml, seed 002) are sent verbatim
where our store allows: contact ids like "abc123" can be no contact's here,
so the update examples run on contacts made first, with their ids put in for
abc123 (and sent verbatim once, to show such a job ends with errors).
"""

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import requests
from psycopg.rows import dict_row

from app.engine import jobs
from app.engine.tasks import apply_chunk, claim_chunk
from tests.server import ROOT, running_gunicorn, stop
from tests.support import auth_headers

BULK = "/intercom/contacts/bulk"
WAIT_SECONDS = 30


@pytest.fixture(scope="module")
def base_url(database_url: str) -> Iterator[str]:
    """One gunicorn for the module (every test still starts from empty tables)."""
    with running_gunicorn(database_url, CONTACTSYNC_RATE_LIMIT="off") as url:
        yield url


@pytest.fixture
def worker(database_url: str) -> Callable[[], Any]:
    """Start the real task worker (once) when the test calls this; stopped afterwards."""
    started: list[subprocess.Popen] = []

    def start() -> None:
        if not started:
            started.append(subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "app", "tasks", "run", "--threads", "1"],
                cwd=ROOT, env={**os.environ, "DATABASE_URL": database_url},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))

    yield start
    for process in started:
        stop(process)


@pytest.fixture
def session(tenant: dict, make_token: Callable[..., str]) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers.update(auth_headers(make_token(
            tenant, ("contacts:read", "contacts:write", "jobs:read"))))
        yield session


class Door:
    """Requests to one gunicorn as one tenant."""

    def __init__(self, base_url: str, session: requests.Session) -> None:
        self.base_url, self.session = base_url, session

    def send(self, method: str, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.session.request(method, f"{self.base_url}{path}", json=body, timeout=30, **kwargs)

    def native_contact(self, **fields: Any) -> dict:
        """A contact made through the native door; its stored form."""
        response = self.send("POST", "/contacts", fields)
        assert response.status_code == 201, response.text
        return response.json()["data"]["contact"]

    def contact(self, contact_id: int) -> dict:
        return self.send("GET", f"/contacts/{contact_id}").json()["data"]

    def tag(self, name: str) -> int:
        return self.send("POST", "/tags", {"name": name}).json()["data"]["id"]

    def job(self, job_id: str) -> requests.Response:
        return self.send("GET", f"{BULK}/{job_id}")

    def finished_job(self, job_id: str) -> dict:
        """The job once it is closed (completed, or completed with errors)."""
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            job = self.job(job_id).json()
            if job["completed_at"] is not None:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not finish: {job}")

    def results(self, job: dict) -> list[dict]:
        """Every row outcome of the job's tasks, through the native door."""
        outcomes = []
        for task in job["tasks"]:
            task_id = task["id"].removeprefix("task_")
            outcomes.extend(self.send("GET", f"/batch-tasks/{task_id}/results").json()["data"])
        return outcomes


@pytest.fixture
def door(base_url: str, session: requests.Session) -> Door:
    return Door(base_url, session)


def assert_error_list(response: requests.Response, status: int, code: str) -> list[dict]:
    """Intercom's error.list with this status and first code; its entries."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error.list" and set(body) == {"type", "request_id", "errors"}
    if "X-Request-Id" not in response.request.headers:
        uuid.UUID(body["request_id"])
    assert body["errors"][0]["code"] == code, body
    assert all(isinstance(e["message"], str) and e["message"] for e in body["errors"])
    return body["errors"]


def count(db: psycopg.Connection, table: str) -> int:
    return db.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"]  # noqa: S608 (a fixed name)


# -- the examples ---------------------------------------------------------------------------------

def test_update_with_tags_is_followed_from_pending_to_completed(door, worker, base_url):
    contact = door.native_contact(email="ann@example.com", tags={"add": ["trial"]})
    vip = door.tag("vip")
    trial = contact["tags"][0]["id"]
    # PUT's with_tags example, with our ids for abc123, '123' and '456'.
    body = {"contacts": [{"id": str(contact["id"]), "name": "Updated Name",
                          "tags": {"add": [{"id": str(vip)}], "remove": [{"id": str(trial)}]}}]}
    response = door.send("PUT", BULK, body, headers={"Intercom-Version": "2.11"})
    assert response.status_code == 202
    job = response.json()
    assert job["id"].startswith("job_") and job["type"] == "contacts.bulk.job"
    assert (job["state"], job["completed_at"]) == ("pending", None)
    assert job["url"] == f"{base_url}{BULK}/{job['id']}"
    [task] = job["tasks"]
    assert (task["item_count"], task["state"], task["started_at"], task["completed_at"]) == \
        (1, "pending", None, None)
    assert task["id"].startswith("task_") and isinstance(task["created_at"], int)
    assert door.job(job["id"]).json()["state"] == "pending"  # no worker yet

    worker()
    done = door.finished_job(job["id"])
    assert done["state"] == "completed" and done["tasks"][0]["state"] == "completed"
    assert done["completed_at"] >= done["tasks"][0]["started_at"] >= done["created_at"]
    assert done["updated_at"] >= done["completed_at"]
    stored = door.contact(contact["id"])
    assert (stored["name"], [t["name"] for t in stored["tags"]]) == ("Updated Name", ["vip"])


def test_companies_are_attached_and_detached(door, worker):
    contact = door.native_contact(email="ann@example.com", companies=[{"companyId": "7", "name": "W-Y"}])
    body = {"contacts": [{"id": str(contact["id"]), "companies": [
        {"company_id": "6", "name": "Blue Sun"}, {"company_id": "7", "remove": True}]}]}
    job = door.send("PUT", BULK, body).json()
    worker()
    assert door.finished_job(job["id"])["state"] == "completed"
    assert door.contact(contact["id"])["companies"] == [{"companyId": "6", "name": "Blue Sun"}]


def test_a_task_is_appended_to_an_open_job_and_a_finished_job_is_closed(door, worker):
    ann = door.native_contact(email="ann@example.com")
    bob = door.native_contact(email="bob@example.com")
    first = door.send("PUT", BULK, {"contacts": [{"id": str(ann["id"]), "language_override": "fr"}]}).json()
    # PUT's append_to_existing_job example, with our ids.
    appended = door.send("PUT", BULK, {"contacts": [{"id": str(bob["id"]), "language_override": "de"}],
                                       "job": {"id": first["id"]}})
    assert appended.status_code == 202
    job = appended.json()
    assert job["id"] == first["id"] and len(job["tasks"]) == 2
    assert [t["item_count"] for t in job["tasks"]] == [1, 1]
    # POST (seed 002: an item with an id updates) appends to the same job.
    third = door.send("POST", BULK, {"contacts": [{"id": ann["id"], "user_id": "crm-ann"}],
                                     "job": {"id": first["id"]}}).json()
    assert len(third["tasks"]) == 3

    worker()
    done = door.finished_job(first["id"])
    assert done["state"] == "completed" and [t["state"] for t in done["tasks"]] == ["completed"] * 3
    assert (door.contact(ann["id"])["locale"], door.contact(bob["id"])["locale"]) == ("fr", "de")
    assert door.contact(ann["id"])["externalId"] == "crm-ann"

    closed = door.send("PUT", BULK, {"contacts": [{"id": str(ann["id"]), "name": "Late"}],
                                     "job": {"id": first["id"]}})
    [error] = assert_error_list(closed, 403, "forbidden")
    assert error["message"] == f"job {first['id']} is closed for new task updates"
    assert door.contact(ann["id"])["name"] is None


def test_the_create_example_is_read_back_through_the_native_door_and_the_feed(door, worker, db):
    door.tag("vip")  # tag id 1; the example's '123' is none of the tenant's tags
    # POST's "successful" example, verbatim.
    example = {"external_id": "abc123", "email": "joe@bloggs.com", "name": "Joe Bloggs", "role": "user",
               "phone": "+353871234567", "avatar": "https://www.example.com/avatar_image.jpg",
               "signed_up_at": 1571672154, "last_seen_at": 1571672154, "owner_id": "321",
               "unsubscribed_from_emails": False, "language_override": "fr",
               "custom_attributes": {"plan": "pro"}, "companies": [{"company_id": "6", "name": "Blue Sun"}],
               "tags": {"add": [{"id": "123"}]}}
    since = door.send("GET", "/contacts", params={"limit": 1}).json()["nextCursor"]
    job = door.send("POST", BULK, {"contacts": [example]}, headers={"Intercom-Version": "Unstable"}).json()
    worker()
    assert door.finished_job(job["id"])["state"] == "completed"

    [found] = door.send("GET", "/contacts", params={"externalId": "abc123"}).json()["data"]
    assert {key: found[key] for key in ("externalId", "email", "name", "phone", "avatarUrl", "ownerId",
                                        "optIn", "locale", "attributes", "companies", "tags")} == {
        "externalId": "abc123", "email": "joe@bloggs.com", "name": "Joe Bloggs", "phone": "+353871234567",
        "avatarUrl": "https://www.example.com/avatar_image.jpg", "ownerId": "321", "optIn": True,
        "locale": "fr", "attributes": {"plan": "pro"}, "companies": [{"companyId": "6", "name": "Blue Sun"}],
        "tags": []}
    assert door.contact(found["id"]) == found
    feed = door.send("GET", "/contacts", params={"cursor": since}).json()["data"]
    assert feed == [found]


def test_create_with_companies_and_tags_examples(door, worker):
    # POST's with_companies example verbatim; with_tags with our tag's id for '123'.
    vip = door.tag("vip")
    with_companies = {"external_id": "abc123", "email": "joe@bloggs.com", "companies": [
        {"company_id": "6", "name": "Blue Sun"}, {"company_id": "7", "name": "Weyland-Yutani"}]}
    with_tags = {"name": "Contact Name", "external_id": "def456", "tags": {"add": [{"id": str(vip)}]}}
    job = door.send("POST", BULK, {"contacts": [with_companies, with_tags]}).json()
    assert job["tasks"][0]["item_count"] == 2
    worker()
    assert door.finished_job(job["id"])["state"] == "completed"
    [joe] = door.send("GET", "/contacts", params={"externalId": "abc123"}).json()["data"]
    assert [c["companyId"] for c in joe["companies"]] == ["6", "7"]
    [named] = door.send("GET", "/contacts", params={"externalId": "def456"}).json()["data"]
    assert (named["name"], [t["name"] for t in named["tags"]]) == ("Contact Name", ["vip"])


def test_the_verbatim_update_example_names_no_contact_and_ends_with_errors(door, worker, db, tenant):
    ann = door.native_contact(email="ann@example.com")
    # PUT's "successful" example verbatim: abc123 is no contact of ours.
    example = {"id": "abc123", "external_id": "ext123", "email": "joe@bloggs.com", "name": "Joe Bloggs",
               "phone": "+353871234567", "avatar": "https://www.example.com/avatar_image.jpg",
               "owner_id": "321", "unsubscribed_from_emails": False, "language_override": "fr",
               "custom_attributes": {"plan": "pro"}, "companies": [{"company_id": "6", "name": "Blue Sun"}],
               "tags": {"add": [{"id": "123"}], "remove": [{"id": "987"}]}}
    unknown_number = {"id": str(ann["id"] + 1000), "name": "Nobody"}
    fine = {"id": ann["id"], "name": "Ann"}
    job = door.send("PUT", BULK, {"contacts": [example, unknown_number, fine]}).json()
    worker()
    done = door.finished_job(job["id"])
    assert done["state"] == "completed_with_errors" and done["tasks"][0]["state"] == "completed_with_errors"
    assert [(r["status"], r.get("code")) for r in door.results(done)] == \
        [("failed", "not_found"), ("failed", "not_found"), ("updated", None)]
    assert count(db, "contacts") == 1 and door.contact(ann["id"])["name"] == "Ann"


def test_a_strict_create_fails_on_an_existing_email_and_the_rest_is_created(door, worker, db):
    existing = door.native_contact(email="joe@bloggs.com", name="Joe")
    body = {"contacts": [{"external_id": "abc123", "email": "Joe@Bloggs.com", "name": "Other"},
                         {"external_id": "new-1", "email": "new@example.com"},
                         {"external_id": "new-1", "name": "same external_id again"}]}
    job = door.send("POST", BULK, body).json()
    worker()
    done = door.finished_job(job["id"])
    assert done["state"] == "completed_with_errors"
    outcomes = door.results(done)
    assert [(r["status"], r.get("code")) for r in outcomes] == \
        [("failed", "contact_exists"), ("created", None), ("failed", "contact_exists")]
    assert outcomes[0]["conflict"]["emailContactId"] == existing["id"]
    assert door.contact(existing["id"])["name"] == "Joe"  # untouched
    assert door.contact(existing["id"])["externalId"] is None
    assert count(db, "contacts") == 2


def test_an_unknown_tag_id_is_skipped_and_the_rest_of_the_item_applies(door, worker):
    contact = door.native_contact(email="ann@example.com")
    vip = door.tag("vip")
    body = {"contacts": [{"id": contact["id"], "name": "Ann", "tags": {
        "add": [{"id": "999999"}, {"id": vip}, {"id": "not-a-number"}], "remove": [{"id": 424242}]}}]}
    job = door.send("PUT", BULK, body).json()
    worker()
    assert door.finished_job(job["id"])["state"] == "completed"
    stored = door.contact(contact["id"])
    assert (stored["name"], [t["name"] for t in stored["tags"]]) == ("Ann", ["vip"])


def test_field_values_map_onto_the_whole_contact(door, worker):
    contact = door.native_contact(email="ann@example.com", attributes={"seats": 2}, optIn=True)
    body = {"contacts": [{"id": contact["id"], "owner_id": 321, "unsubscribed_from_emails": True,
                          "avatar": {"image_url": "https://example.com/a.png"},
                          "custom_attributes": {"plan": "pro"},
                          "company": {"company_id": 6, "name": "Blue Sun"},
                          "externalId": "a native name, ignored", "role": "lead"}]}
    job = door.send("PUT", BULK, body).json()
    worker()
    assert door.finished_job(job["id"])["state"] == "completed"
    stored = door.contact(contact["id"])
    assert (stored["ownerId"], stored["optIn"], stored["avatarUrl"], stored["attributes"],
            stored["companies"], stored["externalId"]) == \
        ("321", False, "https://example.com/a.png", {"seats": 2, "plan": "pro"},
         [{"companyId": "6", "name": "Blue Sun"}], None)


def test_seed_002s_post_updates_by_id_with_its_own_field_names(door, worker):
    contact = door.native_contact(email="ann@example.com", tags={"add": ["trial"]})
    vip, trial = door.tag("vip"), contact["tags"][0]["id"]
    # Seed 002's POST /contacts/bulk: update by id, user_id, an integer owner_id, one company.
    body = {"contacts": [{"id": str(contact["id"]), "user_id": "25", "phone": "+353871234567",
                          "owner_id": 123, "unsubscribed_from_emails": True,
                          "avatar": "https://www.example.com/avatar.png",
                          "custom_attributes": {"plan": "pro"},
                          "company": {"company_id": "6", "name": "Blue Sun"},
                          "tags": {"add": [{"id": str(vip)}], "remove": [{"id": str(trial)}]}}]}
    job = door.send("POST", BULK, body).json()
    worker()
    assert door.finished_job(job["id"])["state"] == "completed"
    stored = door.contact(contact["id"])
    keys = ("externalId", "phone", "ownerId", "optIn", "avatarUrl", "attributes", "companies", "tags")
    assert {key: stored[key] for key in keys} == {
        "externalId": "25", "phone": "+353871234567", "ownerId": "123", "optIn": False,
        "avatarUrl": "https://www.example.com/avatar.png", "attributes": {"plan": "pro"},
        "companies": [{"companyId": "6", "name": "Blue Sun"}], "tags": [{"id": vip, "name": "vip"}]}


# -- the errors -----------------------------------------------------------------------------------

NOT_AN_ARRAY = {"contacts": {"id": "1"}}


@pytest.mark.parametrize(("body", "status", "code", "message", "field"), [
    ({}, 422, "field_not_found", "contacts field must be supplied", "contacts"),
    ({"contacts": [{"name": "no id"}]}, 422, "field_not_found", "contacts must be identified by id",
     "contacts[0].id"),
    ({"contacts": [{"id": str(i + 1)} for i in range(101)]}, 422, "parameter_invalid",
     "maximum number of contacts per request is 100", "contacts"),
    (NOT_AN_ARRAY, 422, "type_mismatch", "contacts must be an array", "contacts"),
    ({"contacts": ["1"]}, 422, "type_mismatch", "each contact must be an object", "contacts"),
    ({"contacts": [{"id": "1", "email": 17}]}, 422, "type_mismatch", None, "contacts[0].email"),
    ({"contacts": [{"id": "1", "email": "not an address"}]}, 422, "parameter_invalid", None,
     "contacts[0].email"),
    ({"contacts": [{"id": "1", "avatar": "ftp://example.com/a.png"}]}, 422, "parameter_invalid", None,
     "contacts[0].avatar"),
    ({"contacts": [{"id": True}]}, 422, "type_mismatch", None, "contacts[0].id"),
    ({"contacts": [{"id": "1", "tags": {"add": ["vip"]}}]}, 422, "type_mismatch", None,
     "contacts[0].tags.add[0]"),
    ({"contacts": [{"id": "1"}], "job": "job_1"}, 422, "type_mismatch", None, "job"),
    ([], 422, "type_mismatch", None, None),
])
def test_a_bad_body_is_an_error_list_and_queues_nothing(door, db, body, status, code, message, field):
    response = door.send("PUT", BULK, body)
    [error, *_] = assert_error_list(response, status, code)
    if message is not None:
        assert error["message"] == message
    assert error.get("field") == field
    assert count(db, "batch_tasks") == 0 and count(db, "batch_jobs") == 0


def test_a_create_needs_an_identity_and_every_bad_field_is_named(door, db):
    body = {"contacts": [{"name": "nobody"}, {"email": "a@example.com", "phone": "x", "owner_id": [1]}]}
    errors = assert_error_list(door.send("POST", BULK, body), 422, "field_not_found")
    assert [(e["code"], e["field"]) for e in errors] == [
        ("field_not_found", "contacts[0]"), ("parameter_invalid", "contacts[1].phone"),
        ("type_mismatch", "contacts[1].owner_id")]
    assert count(db, "batch_tasks") == 0


def test_a_body_that_is_not_json_is_an_error_list(door, db):
    response = door.session.put(f"{door.base_url}{BULK}", data=b'{"contacts": [', timeout=30,
                                headers={"Content-Type": "application/json"})
    assert_error_list(response, 400, "parameter_invalid")
    assert_error_list(door.session.put(f"{door.base_url}{BULK}", data=b"x", timeout=30), 415,
                      "unsupported_media_type")
    assert count(db, "batch_tasks") == 0


def test_an_unknown_job_is_not_found(door, make_tenant, make_token, base_url):
    contact = door.native_contact(email="ann@example.com")
    item = {"contacts": [{"id": str(contact["id"])}]}
    [error] = assert_error_list(door.send("PUT", BULK, {**item, "job": {"id": "job_v2_1"}}), 404,
                                "job_not_found")
    assert error["message"] == "job job_v2_1 not found"
    assert_error_list(door.send("PUT", BULK, {**item, "job": {"id": "job_424242"}}), 404, "job_not_found")
    assert_error_list(door.job("job_v2_1"), 404, "job_not_found")
    assert_error_list(door.job("job_424242"), 404, "job_not_found")
    # Another tenant's job is not found either, to read or to append to.
    mine = door.send("PUT", BULK, item).json()["id"]
    other = Door(base_url, requests.Session())
    other.session.headers.update(auth_headers(make_token(make_tenant("globex"),
                                                         ("contacts:write", "jobs:read"))))
    assert_error_list(other.job(mine), 404, "job_not_found")
    assert_error_list(other.send("PUT", BULK, {**item, "job": {"id": mine}}), 404, "job_not_found")


def test_a_bad_token_is_unauthorized_and_a_missing_scope_forbidden(door, base_url, tenant, make_token):
    body = {"contacts": [{"id": "1"}]}
    bad = requests.put(f"{base_url}{BULK}", json=body, timeout=30,
                       headers={"Authorization": "Bearer cs_" + "x" * 43})
    [error] = assert_error_list(bad, 401, "unauthorized")
    assert error["message"] == "Access Token Invalid"
    assert_error_list(requests.get(f"{base_url}{BULK}/job_1", timeout=30), 401, "unauthorized")
    read_only = auth_headers(make_token(tenant, ("contacts:read",)))
    assert_error_list(requests.put(f"{base_url}{BULK}", json=body, headers=read_only, timeout=30),
                      403, "forbidden")
    assert_error_list(requests.get(f"{base_url}{BULK}/job_1", headers=read_only, timeout=30),
                      403, "forbidden")


def test_a_retry_with_its_idempotency_key_answers_the_same_job(door, db):
    contact = door.native_contact(email="ann@example.com")
    body = {"contacts": [{"id": str(contact["id"]), "name": "Ann"}]}
    first = door.send("PUT", BULK, body, headers={"Idempotency-Key": "k-1"})
    again = door.send("PUT", BULK, body, headers={"Idempotency-Key": "k-1"})
    assert again.headers["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert count(db, "batch_tasks") == 1


# -- closing a job against an append --------------------------------------------------------------

def test_an_append_racing_the_last_task_either_goes_first_or_is_refused(door, database_url, tenant):
    """The worker's transaction that ends the job's last task and an append
    lock the job row, so the job never closes with a pending task, and once
    closed stays so."""
    contact = door.native_contact(email="ann@example.com")
    body = {"contacts": [{"id": str(contact["id"]), "name": "One"}]}
    job_id = int(door.send("PUT", BULK, body).json()["id"].removeprefix("job_"))
    rows = [{"op": "update", "id": contact["id"], "name": "Two"}]

    def connect() -> psycopg.Connection:
        return psycopg.connect(database_url, autocommit=True, row_factory=dict_row)

    def finish_task(conn: psycopg.Connection) -> threading.Thread:
        """Apply the task's chunk in a thread (it waits for the job's lock if held)."""
        chunk = claim_chunk(conn, 30)
        assert chunk is not None

        def apply() -> None:
            with conn.transaction():
                apply_chunk(conn, chunk, give_up=False)

        thread = threading.Thread(target=apply)
        thread.start()
        return thread

    # The append comes first: it holds the job while the last task ends.
    with connect() as appender, connect() as applier:
        with appender.transaction():
            jobs.submit_job_task(appender, tenant["id"], rows, job_id)
            thread = finish_task(applier)
            thread.join(timeout=1)
            assert thread.is_alive()  # the worker waits for the job's lock
        thread.join(timeout=WAIT_SECONDS)
    job = door.job(f"job_{job_id}").json()
    assert job["completed_at"] is None and [t["state"] for t in job["tasks"]] == ["completed", "pending"]

    # The last task ends first: an append waiting on the job is refused once it commits.
    with connect() as appender, connect() as applier:
        chunk = claim_chunk(applier, 30)
        assert chunk is not None
        refused: list[BaseException] = []
        with applier.transaction():
            apply_chunk(applier, chunk, give_up=False)

            def append() -> None:
                try:
                    with appender.transaction():
                        jobs.submit_job_task(appender, tenant["id"], rows, job_id)
                except jobs.JobClosed as exc:
                    refused.append(exc)

            thread = threading.Thread(target=append)
            thread.start()
            thread.join(timeout=1)
            assert thread.is_alive()  # the append waits for the closing transaction
        thread.join(timeout=WAIT_SECONDS)
        assert len(refused) == 1
    job = door.job(f"job_{job_id}").json()
    assert job["state"] == "completed" and len(job["tasks"]) == 2


def test_answers_conform_to_the_openapi_document(door, worker):
    from openapi_schema_validator import OAS31Validator

    document = door.send("GET", "/openapi.json").json()
    operations = document["paths"]

    def conforms(path: str, method: str, response: requests.Response) -> None:
        entry = operations[path][method]["responses"][str(response.status_code)]
        schema = entry["content"]["application/json"]["schema"]
        OAS31Validator({**schema, "components": document["components"]}).validate(response.json())

    contact = door.native_contact(email="ann@example.com")
    queued = door.send("PUT", BULK, {"contacts": [{"id": contact["id"], "name": "Ann"}]})
    conforms("/intercom/contacts/bulk", "put", queued)
    conforms("/intercom/contacts/bulk", "post", door.send("POST", BULK, {"contacts": [{"name": "x"}]}))
    conforms("/intercom/contacts/bulk", "put", door.send("PUT", BULK, {"contacts": "x"}))
    conforms("/intercom/contacts/bulk/delete", "post",
             door.send("POST", f"{BULK}/delete", {"contacts": [{"id": "abc123"}]}))
    worker()
    door.finished_job(queued.json()["id"])
    conforms("/intercom/contacts/bulk/{job_id}", "get", door.job(queued.json()["id"]))
    conforms("/intercom/contacts/bulk/{job_id}", "get", door.job("job_x"))


def test_every_error_under_the_prefix_is_an_error_list(door):
    assert_error_list(door.send("GET", "/intercom/contacts"), 404, "not_found")
    assert_error_list(door.send("DELETE", BULK), 405, "method_not_allowed")
    sent = door.send("PUT", BULK, {}, headers={"X-Request-Id": "my-request-1"})
    assert sent.json()["request_id"] == "my-request-1" == sent.headers["X-Request-Id"]
    # Outside the prefix, errors keep the native envelope.
    assert door.send("GET", "/nowhere").json()["success"] is False


def test_a_job_whose_last_task_is_cancelled_closes_with_errors(door, tenant, make_token, base_url):
    contact = door.native_contact(email="ann@example.com")
    job = door.send("PUT", BULK, {"contacts": [{"id": contact["id"], "name": "Never"}]}).json()
    task_id = job["tasks"][0]["id"].removeprefix("task_")
    canceller = auth_headers(make_token(tenant, ("jobs:write",)))
    cancelled = requests.delete(f"{base_url}/batch-tasks/{task_id}", headers=canceller, timeout=30)
    assert cancelled.json()["data"]["status"] == "cancelled"
    closed = door.job(job["id"]).json()
    assert (closed["state"], closed["tasks"][0]["state"]) == ("completed_with_errors",) * 2
    assert closed["completed_at"] is not None
    assert_error_list(door.send("PUT", BULK, {"contacts": [{"id": contact["id"]}], "job": {"id": job["id"]}}),
                      403, "forbidden")


def test_closed_jobs_are_purged_after_the_retention_with_their_tasks(door, db, database_url):
    contact = door.native_contact(email="ann@example.com")
    old = door.send("PUT", BULK, {"contacts": [{"id": contact["id"]}]}).json()["id"]
    kept = door.send("PUT", BULK, {"contacts": [{"id": contact["id"]}]}).json()["id"]
    db.execute("UPDATE batch_tasks SET status = 'completed', completed_at = now() - interval '8 days'")
    db.execute("UPDATE batch_jobs SET closed_at = now() - interval '8 days' WHERE id = %s",
               (int(old.removeprefix("job_")),))
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        assert jobs.purge_closed_jobs(conn, retention_days=7) == 1
    assert_error_list(door.job(old), 404, "job_not_found")
    assert door.job(kept).status_code == 200
    assert count(db, "batch_tasks") == 1


# -- bulk delete ----------------------------------------------------------------------------------

def test_bulk_delete_erases_by_id_and_an_unknown_id_ends_the_job_with_errors(door, worker, db):
    ann = door.native_contact(externalId="crm-ann", email="ann@example.com")
    bob = door.native_contact(email="bob@example.com")
    kept = door.native_contact(email="kept@example.com")
    since = door.send("GET", "/contacts", params={"limit": 10}).json()["nextCursor"]
    # The "successful" example with our ids for abc123 and def456, then one of no contact.
    body = {"contacts": [{"id": str(ann["id"])}, {"id": bob["id"]}, {"id": "abc123"}]}
    response = door.send("POST", f"{BULK}/delete", body)
    assert response.status_code == 202 and response.json()["tasks"][0]["item_count"] == 3
    worker()
    done = door.finished_job(response.json()["id"])
    assert done["state"] == "completed_with_errors"
    assert [(r["status"], r.get("code")) for r in door.results(done)] == \
        [("deleted", None), ("deleted", None), ("failed", "not_found")]
    task_id = done["tasks"][0]["id"].removeprefix("task_")
    task = door.send("GET", f"/batch-tasks/{task_id}").json()["data"]
    assert (task["processedCount"], task["deletedCount"], task["failedCount"]) == (3, 2, 1)  # they add up
    assert door.send("GET", f"/contacts/{ann['id']}").status_code == 404
    assert door.contact(kept["id"])["email"] == "kept@example.com"
    feed = door.send("GET", "/contacts", params={"cursor": since}).json()["data"]
    assert sorted((c["id"], c.get("deleted")) for c in feed) == [(ann["id"], True), (bob["id"], True)]
    assert count(db, "contacts") == 1


def test_a_delete_appended_to_an_update_job(door, worker):
    ann = door.native_contact(email="ann@example.com")
    bob = door.native_contact(email="bob@example.com")
    job = door.send("PUT", BULK, {"contacts": [{"id": ann["id"], "name": "Ann"}]}).json()
    # The append_to_existing_job example of bulk delete, with our ids.
    appended = door.send("POST", f"{BULK}/delete", {"contacts": [{"id": str(bob["id"])}],
                                                     "job": {"id": job["id"]}}).json()
    assert appended["id"] == job["id"] and len(appended["tasks"]) == 2
    worker()
    assert door.finished_job(job["id"])["state"] == "completed"
    assert door.contact(ann["id"])["name"] == "Ann"
    assert door.send("GET", f"/contacts/{bob['id']}").status_code == 404


def test_bulk_delete_takes_ids_only(door, db):
    missing = door.send("POST", f"{BULK}/delete", {"contacts": [{"email": "ann@example.com"}]})
    [error] = assert_error_list(missing, 422, "field_not_found")
    assert error["message"] == "contacts must be identified by id"
    assert_error_list(door.send("POST", f"{BULK}/delete", {"contacts": [{"id": 1}] * 101}), 422,
                      "parameter_invalid")
    assert count(db, "batch_tasks") == 0
