"""Batch tasks (DESIGN 10) through the native door, applied by the worker's
own loop (app/workers/tasks.py) in this process, against the real database.
The worker as a process, killed and restarted, is tests/test_task_faults.py."""

import csv
import io
import json
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from app.db import pool_of
from app.engine import tasks as engine
from app.sql import queries
from tests.support import BULK_URL, TASK_SETTINGS, auth_headers, drain, stored_contacts, stored_events

ASYNC = {"Prefer": "respond-async"}


@pytest.fixture
def headers(tenant: dict, make_token: Callable[..., str]) -> dict[str, str]:
    """Every scope a task needs: writing contacts, reading and cancelling jobs."""
    return auth_headers(make_token(tenant, ("contacts:read", "contacts:write", "jobs:read", "jobs:write")))


def submit(client: FlaskClient, headers: dict[str, str], contacts: list, **options) -> dict:
    response = client.post(BULK_URL, json={"contacts": contacts, **options}, headers={**headers, **ASYNC})
    assert response.status_code == 202, response.get_json()
    return response


def rows(count: int, start: int = 0, **fields) -> list[dict]:
    return [{"externalId": f"crm-{i}", "email": f"User{i}@Example.com", **fields}
            for i in range(start, start + count)]


def test_a_task_is_stored_answered_at_once_and_applied_by_a_worker(app, client, headers, db, tenant):
    response = submit(client, headers, rows(1200))
    task = response.get_json()["data"]
    assert response.headers["Location"] == f"/batch-tasks/{task['id']}"
    assert response.headers["Preference-Applied"] == "respond-async"
    assert task["status"] == "pending" and task["totalCount"] == 1200 and task["processedCount"] == 0
    assert task["estimatedCompletionTime"] is None
    assert stored_contacts(db, tenant["id"]) == []  # nothing applied by the request itself

    assert drain(app) == 3  # 500 + 500 + 200 rows
    done = client.get(f"/batch-tasks/{task['id']}", headers=headers).get_json()["data"]
    assert done["status"] == "completed" and done["progressPercentage"] == 100
    assert (done["processedCount"], done["createdCount"], done["failedCount"]) == (1200, 1200, 0)
    assert done["completedAt"] is not None and done["estimatedCompletionTime"] == done["completedAt"]
    assert len(stored_contacts(db, tenant["id"])) == 1200
    chunks = db.execute("SELECT state, rows FROM batch_task_chunks ORDER BY seq").fetchall()
    assert [(c["state"], c["rows"]) for c in chunks] == [("done", None)] * 3  # rows kept no longer


def test_results_have_the_synchronous_doors_shapes_paged_and_streamed(app, client, headers):
    contacts = rows(3) + [{"email": "not-an-address"}] + rows(1, start=0, firstName="Ann")
    task_id = submit(client, headers, contacts).get_json()["data"]["id"]
    drain(app)
    sync = client.post(BULK_URL, json={"contacts": [{"email": "not-an-address"}]}, headers=headers)
    [sync_failure] = sync.get_json()["data"]["failures"]

    page = client.get(f"/batch-tasks/{task_id}/results?limit=2", headers=headers).get_json()
    assert [r["status"] for r in page["data"]] == ["created", "created"] and page["hasMore"]
    rest = client.get(f"/batch-tasks/{task_id}/results?cursor={page['nextCursor']}",
                      headers=headers).get_json()
    assert [r["index"] for r in rest["data"]] == [2, 3, 4] and not rest["hasMore"]
    failed = rest["data"][1]
    assert failed == {"index": 3, "id": None, "status": "failed", **{**sync_failure, "index": 3}}
    assert rest["data"][2]["status"] == "updated"

    ndjson = client.get(f"/batch-tasks/{task_id}/results",
                        headers={**headers, "Accept": "application/x-ndjson"})
    assert ndjson.mimetype == "application/x-ndjson"
    lines = [json.loads(line) for line in ndjson.get_data(as_text=True).splitlines()]
    assert lines == page["data"] + rest["data"]

    table = client.get(f"/batch-tasks/{task_id}/results", headers={**headers, "Accept": "text/csv"})
    records = list(csv.DictReader(io.StringIO(table.get_data(as_text=True))))
    assert [r["status"] for r in records] == ["created"] * 3 + ["failed", "updated"]
    assert records[3]["code"] == "invalid_contact" and json.loads(records[3]["errors"]) == failed["errors"]


def test_a_tenants_tasks_apply_in_the_order_submitted(app, client, headers, db, tenant):
    first = submit(client, headers, rows(600, firstName="first")).get_json()["data"]["id"]
    second = submit(client, headers, rows(1, firstName="second")).get_json()["data"]["id"]
    with pool_of(app).connection() as conn:
        claimed = engine.claim_chunk(conn, lease_seconds=30)
        # The tenant's oldest chunk is leased: nothing else of this tenant is due.
        assert engine.claim_chunk(conn, lease_seconds=30) is None
    assert (claimed.task_id, claimed.seq) == (first, 0)
    db.execute("UPDATE batch_task_chunks SET lease_until = now() - interval '1 s'")  # as if it died
    drain(app)
    [contact] = [c for c in stored_contacts(db, tenant["id"]) if c["external_id"] == "crm-0"]
    assert contact["first_name"] == "second"
    statuses = {t["id"]: t["status"] for t in client.get("/batch-tasks", headers=headers).get_json()["data"]}
    assert statuses == {first: "completed", second: "completed"}


def test_tenants_do_not_wait_for_each_other(app, client, headers, make_tenant, make_token):
    submit(client, headers, rows(600))
    other = auth_headers(make_token(make_tenant("other"), ("contacts:write",)))
    submit(client, other, rows(1))
    with pool_of(app).connection() as conn:
        first = engine.claim_chunk(conn, lease_seconds=30)
        second = engine.claim_chunk(conn, lease_seconds=30)
    assert first is not None and second is not None and first.tenant_id != second.tenant_id


def test_a_worker_whose_lease_was_taken_over_applies_nothing(app, client, headers, db, tenant):
    submit(client, headers, rows(2))
    with pool_of(app).connection() as conn:
        stale = engine.claim_chunk(conn, lease_seconds=30)
        db.execute("UPDATE batch_task_chunks SET lease_until = now() - interval '1 s'")
        fresh = engine.claim_chunk(conn, lease_seconds=30)
        assert fresh is not None and fresh.attempts == 2
        with conn.transaction():
            assert engine.apply_chunk(conn, stale, give_up=False) is None
        assert stored_contacts(db, tenant["id"]) == []
        with conn.transaction():
            assert engine.apply_chunk(conn, fresh, give_up=False) == "completed"
    assert len(stored_contacts(db, tenant["id"])) == 2


def test_a_chunk_that_used_up_its_attempts_fails_its_rows_and_the_queue_goes_on(
        app, client, headers, db, tenant):
    stuck = submit(client, headers, rows(2)).get_json()["data"]["id"]
    after = submit(client, headers, rows(1, start=5)).get_json()["data"]["id"]
    db.execute("UPDATE batch_task_chunks SET attempts = %s WHERE task_id = %s",
               (TASK_SETTINGS.max_attempts, stuck))
    drain(app)
    task = client.get(f"/batch-tasks/{stuck}", headers=headers).get_json()["data"]
    assert (task["status"], task["failedCount"], task["processedCount"]) == ("completed_with_errors", 2, 2)
    results = client.get(f"/batch-tasks/{stuck}/results", headers=headers).get_json()["data"]
    assert {r["code"] for r in results} == {"internal_error"}
    assert client.get(f"/batch-tasks/{after}", headers=headers).get_json()["data"]["status"] == "completed"
    assert [c["external_id"] for c in stored_contacts(db, tenant["id"])] == ["crm-5"]


def test_cancelling_skips_what_is_not_applied_and_keeps_what_is(app, client, headers, db, tenant):
    task_id = submit(client, headers, rows(1200)).get_json()["data"]["id"]
    assert drain(app, limit=1) == 1
    cancelled = client.delete(f"/batch-tasks/{task_id}", headers=headers).get_json()["data"]
    assert (cancelled["status"], cancelled["processedCount"]) == ("cancelled", 500)
    assert drain(app) == 0
    assert len(stored_contacts(db, tenant["id"])) == 500
    results = client.get(f"/batch-tasks/{task_id}/results?limit=1000", headers=headers).get_json()
    statuses = [r["status"] for r in results["data"]]
    assert statuses == ["created"] * 500 + ["skipped"] * 500 and results["hasMore"]
    again = client.delete(f"/batch-tasks/{task_id}", headers=headers).get_json()["data"]
    assert again == cancelled  # a task that ended stays as it ended


def test_a_completed_task_is_an_event_with_the_task(app, client, headers, tenant, receiver, make_webhook,
                                                    db):
    make_webhook(tenant, receiver.url)
    task_id = submit(client, headers, rows(2), runWorkflow=True).get_json()["data"]["id"]
    drain(app)
    events = stored_events(db, tenant["id"])
    assert [e["type"] for e in events] == ["contact.created", "contact.created", "batch_task.completed"]
    [task_event] = db.execute("SELECT batch_task FROM webhook_events WHERE batch_task IS NOT NULL").fetchall()
    view = client.get(f"/batch-tasks/{task_id}", headers=headers).get_json()["data"]
    assert task_event["batch_task"] == view


def test_submission_checks_the_shape_and_the_limits_and_queues_nothing(make_app, headers, db):
    client = make_app(TASK_MAX_ROWS=5, TASK_MAX_BODY_BYTES=4096).test_client()
    async_headers = {**headers, **ASYNC}
    too_many = client.post(BULK_URL, json={"contacts": rows(6)}, headers=async_headers)
    assert too_many.status_code == 400 and too_many.get_json()["error"]["code"] == "batch_size"
    atomic = client.post(BULK_URL, json={"contacts": rows(1), "atomic": True}, headers=async_headers)
    assert atomic.status_code == 400 and "atomic" in atomic.get_json()["error"]["details"]
    not_a_list = client.post(BULK_URL, json={"contacts": {"email": "a@b.co"}}, headers=async_headers)
    assert not_a_list.get_json()["error"]["code"] == "invalid_request"
    large = client.post(BULK_URL, json={"contacts": rows(1, firstName="x" * 5000)}, headers=async_headers)
    assert large.status_code == 413
    assert db.execute("SELECT count(*) AS n FROM batch_tasks").fetchone()["n"] == 0


def test_a_batch_task_body_may_be_larger_than_a_synchronous_one(make_app, headers):
    client = make_app(MAX_BODY_BYTES=2048, TASK_MAX_BODY_BYTES=1024 * 1024).test_client()
    body = {"contacts": rows(40)}
    assert client.post(BULK_URL, json=body, headers=headers).status_code == 413
    assert client.post(BULK_URL, json=body, headers={**headers, **ASYNC}).status_code == 202


def test_reading_takes_jobs_read_and_cancelling_jobs_write(client, headers, tenant, make_token):
    task_id = submit(client, headers, rows(1)).get_json()["data"]["id"]
    writer = auth_headers(make_token(tenant, ("contacts:write",)))
    reader = auth_headers(make_token(tenant, ("jobs:read",)))
    assert client.get(f"/batch-tasks/{task_id}", headers=writer).status_code == 403
    assert client.get(f"/batch-tasks/{task_id}", headers=reader).status_code == 200
    assert client.delete(f"/batch-tasks/{task_id}", headers=reader).status_code == 403


def test_another_tenants_task_is_not_found(client, headers, make_tenant, make_token):
    task_id = submit(client, headers, rows(1)).get_json()["data"]["id"]
    other = auth_headers(make_token(make_tenant("other"), ("jobs:read", "jobs:write")))
    for response in (client.get(f"/batch-tasks/{task_id}", headers=other),
                     client.get(f"/batch-tasks/{task_id}/results", headers=other),
                     client.delete(f"/batch-tasks/{task_id}", headers=other)):
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"


def test_the_task_list_pages_newest_first(client, headers):
    ids = [submit(client, headers, rows(1, start=i)).get_json()["data"]["id"] for i in range(3)]
    first = client.get("/batch-tasks?limit=2", headers=headers).get_json()
    assert [t["id"] for t in first["data"]] == ids[:0:-1] and first["hasMore"]
    rest = client.get(f"/batch-tasks?limit=2&cursor={first['nextCursor']}", headers=headers).get_json()
    assert [t["id"] for t in rest["data"]] == ids[:1] and not rest["hasMore"]
    bad = client.get("/batch-tasks?cursor=zz", headers=headers)
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_cursor"


def test_finished_tasks_are_purged_after_the_retention(app, client, headers, db):
    old = submit(client, headers, rows(1)).get_json()["data"]["id"]
    kept = submit(client, headers, rows(1, start=1)).get_json()["data"]["id"]
    drain(app)
    db.execute("UPDATE batch_tasks SET completed_at = now() - interval '8 days' WHERE id = %s", (old,))
    with pool_of(app).connection() as conn:
        assert engine.purge_finished_tasks(conn, retention_days=7) == 1
    remaining = db.execute("SELECT id FROM batch_tasks").fetchall()
    assert [t["id"] for t in remaining] == [kept]
    assert db.execute("SELECT count(*) AS n FROM batch_task_chunks WHERE task_id = %s",
                      (old,)).fetchone()["n"] == 0


def test_counters_equal_the_stored_results(app, client, headers, db, tenant):
    contacts = rows(700) + [{"email": "bad"}] * 3 + rows(10, firstName="again")
    submit(client, headers, contacts)
    drain(app)
    [task] = db.execute(queries["select-tasks"],
                        {"tenant_id": tenant["id"], "before_id": None, "limit": 1}).fetchall()
    outcomes = [o for c in db.execute("SELECT results FROM batch_task_chunks ORDER BY seq").fetchall()
                for o in c["results"]]
    assert [o["index"] for o in outcomes] == list(range(len(contacts)))
    for status in ("created", "updated", "unchanged", "failed"):
        assert task[f"{status}_count"] == sum(1 for o in outcomes if o["status"] == status), status
    assert (task["created_count"], task["updated_count"], task["failed_count"]) == (700, 10, 3)


def test_a_retried_submission_with_its_idempotency_key_answers_the_same_task(client, headers, db):
    keyed = {**headers, **ASYNC, "Idempotency-Key": "import-2026-12-04"}
    first = client.post(BULK_URL, json={"contacts": rows(3)}, headers=keyed)
    again = client.post(BULK_URL, json={"contacts": rows(3)}, headers=keyed)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_data() == first.get_data()
    assert again.headers["Location"] == first.headers["Location"]
    assert db.execute("SELECT count(*) AS n FROM batch_tasks").fetchone()["n"] == 1


def test_rows_that_are_not_objects_fail_alone_in_the_worker(app, client, headers):
    task_id = submit(client, headers, [5, "x", None, {"email": "ok@example.com"}]).get_json()["data"]["id"]
    drain(app)
    results = client.get(f"/batch-tasks/{task_id}/results", headers=headers).get_json()["data"]
    assert [r["status"] for r in results] == ["failed", "failed", "failed", "created"]
    assert {r.get("code") for r in results[:3]} == {"invalid_contact"}


def test_rows_validated_ahead_give_the_outcomes_of_rows_validated_as_applied(
        app, client, make_tenant, make_token, db):
    """An idle worker validates the next chunks while another applies (prepare_chunk);
    the outcomes must be exactly those of chunks that validate themselves."""
    def contacts(tenant_tag: str) -> list:
        return (rows(400) + [{"email": "not-an-address"}, {"externalId": "crm-1", "nope": 1}]
                + [{"externalId": "crm-2", "email": "user3@example.com"}]  # conflict
                + rows(300, start=200, tags={"add": ["vip"], "remove": []}) + [7])

    scopes = ("contacts:write", "jobs:read")
    prepared_headers = auth_headers(make_token(make_tenant("prepared"), scopes))
    plain_headers = auth_headers(make_token(make_tenant("plain"), scopes))
    prepared_task = submit(client, prepared_headers, contacts("a")).get_json()["data"]["id"]
    with pool_of(app).connection() as conn:
        while engine.prepare_chunk(conn):
            pass
    assert db.execute("SELECT count(*) AS n FROM batch_task_chunks WHERE prepared IS NULL"
                      ).fetchone()["n"] == 0
    plain_task = submit(client, plain_headers, contacts("b")).get_json()["data"]["id"]
    drain(app)

    def outcomes(headers: dict, task_id: int) -> list[dict]:
        results = client.get(f"/batch-tasks/{task_id}/results?limit=1000", headers=headers).get_json()
        return [{k: v for k, v in r.items() if k not in ("id", "conflict")} for r in results["data"]]

    assert outcomes(prepared_headers, prepared_task) == outcomes(plain_headers, plain_task)
    assert {r["status"] for r in outcomes(plain_headers, plain_task)} == {"created", "updated", "failed"}
    assert db.execute("SELECT count(*) AS n FROM batch_task_chunks WHERE prepared IS NOT NULL"
                      ).fetchone()["n"] == 0  # dropped with the rows once applied


def test_a_chunk_being_applied_is_not_validated_ahead(app, client, headers, db):
    submit(client, headers, rows(10))
    with pool_of(app).connection() as conn:
        assert engine.claim_chunk(conn, lease_seconds=30) is not None
        assert engine.prepare_chunk(conn) is False  # its worker validates it as it applies


def test_a_batch_task_counts_stale_rows(app, client, headers):
    submit(client, headers, [{"externalId": "a", "sourceUpdatedAt": "2026-12-04T10:00:00Z"}])
    task_id = submit(client, headers, [{"externalId": "a", "firstName": "x",
                                        "sourceUpdatedAt": "2026-12-01T10:00:00Z"}]).get_json()["data"]["id"]
    drain(app)
    task = client.get(f"/batch-tasks/{task_id}", headers=headers).get_json()["data"]
    assert (task["status"], task["staleCount"], task["failedCount"]) == ("completed", 1, 0)


def test_rows_a_body_can_hold_but_no_column_can_are_stored_and_reported_as_the_sync_door_does(
        app, client, headers):
    """A lone surrogate and a number beyond a float are invalid rows, not an
    unstorable submission: the worker reports them as the synchronous door."""
    body = (b'{"contacts": [{"externalId": "a", "firstName": "\\ud800"},'
            b' {"externalId": "b", "attributes": {"n": 1e400}}, {"externalId": "c"}]}')
    async_answer = client.post(BULK_URL, data=body, content_type="application/json",
                               headers={**headers, **ASYNC})
    assert async_answer.status_code == 202, async_answer.get_json()
    drain(app)
    results = client.get(f"/batch-tasks/{async_answer.get_json()['data']['id']}/results",
                         headers=headers).get_json()["data"]
    sync = client.post(BULK_URL, data=body.replace(b'"c"', b'"d"'), content_type="application/json",
                       headers=headers).get_json()["data"]
    assert [r["status"] for r in results] == ["failed", "failed", "created"]
    assert [(r["code"], r["errors"]) for r in results[:2]] == \
        [(f["code"], f["errors"]) for f in sync["failures"]]


def test_a_key_names_a_submission_not_a_synchronous_request_of_the_same_body(client, headers):
    keyed = {**headers, "Idempotency-Key": "k-7"}
    assert client.post(BULK_URL, json={"contacts": rows(1)}, headers=keyed).status_code == 200
    again = client.post(BULK_URL, json={"contacts": rows(1)}, headers={**keyed, **ASYNC})
    assert again.status_code == 422 and again.get_json()["error"]["code"] == "idempotency_key_reused"


def test_a_cursor_must_be_ascii_digits(client, headers):
    for cursor in ("²", "-1", "1e3"):
        response = client.get(f"/batch-tasks?cursor={cursor}", headers=headers)
        assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_cursor"
