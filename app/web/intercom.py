"""Intercom's door (DESIGN 12): bulk contact jobs under /intercom, so that an
Intercom client pointed at `http://HOST:PORT/intercom` works unchanged.

| PUT  /intercom/contacts/bulk          | contacts:write | update up to 100 contacts by id             |
| POST /intercom/contacts/bulk          | contacts:write | items with id update, the others create     |
| POST /intercom/contacts/bulk/delete   | contacts:write | delete up to 100 contacts by id (erasure)   |
| GET  /intercom/contacts/bulk/{job_id} | jobs:read      | the job and its tasks                        |

Each write is one batch task of a job (a new one, or `"job": {"id": ...}`
while that job is open), answered 202 with the job in Intercom's shape.
Errors are Intercom's error.list (app/errors.py). Intercom-Version is
accepted whatever its value, or absent: nothing here depends on it.
"""

from datetime import datetime
from typing import Any

import psycopg
from flask import Blueprint, g, url_for

from app.auth import require_scope
from app.db import get_conn
from app.engine import jobs
from app.errors import IntercomRejected, InvalidJson, JobClosed, JobNotFound
from app.schemas.intercom import (
    DELETE,
    JOB_PREFIX,
    TASK_PREFIX,
    UPDATE,
    UPSERT,
    RequestRejected,
    load_request,
    parse_prefixed_id,
)
from app.web.body import parse_json, read_body
from app.web.writes import idempotency_of_request, replay_if_answered, run_write

bp = Blueprint("intercom", __name__, url_prefix="/intercom")

# Our task statuses as Intercom's task states: an ended task that did not
# apply every item (cancelled natively, or failed) ended with errors.
TASK_STATES = {"pending": "pending", "running": "running", "completed": "completed",
               "completed_with_errors": "completed_with_errors", "cancelled": "completed_with_errors",
               "failed": "completed_with_errors"}


@bp.put("/contacts/bulk")
@require_scope("contacts:write")
def bulk_update():
    """Update contacts by id (Intercom's current API)."""
    return submit(UPDATE)


@bp.post("/contacts/bulk")
@require_scope("contacts:write")
def bulk_create_or_update():
    """Items with an id update (seed 002's API); the others are strict creates."""
    return submit(UPSERT)


@bp.post("/contacts/bulk/delete")
@require_scope("contacts:write")
def bulk_delete():
    """Delete contacts by id: erased (DESIGN 9) when the task applies."""
    return submit(DELETE)


@bp.get("/contacts/bulk/<job_id>")
@require_scope("jobs:read")
def get_job(job_id: str):
    """The job, as the answer to its writes shows it."""
    number = parse_prefixed_id(job_id, JOB_PREFIX)
    job = None
    if number is not None:
        with get_conn() as conn:
            job = jobs.find_job(conn, g.principal.tenant_id, number)
    if job is None:
        raise JobNotFound(f"job {job_id[:100]} not found")
    return intercom_job(job)


def submit(mode: str):
    """Check the whole body (422 naming every problem, nothing queued), then
    store its items as one task of a new or an open job; 202 with the job."""
    raw = read_body()
    idempotency = idempotency_of_request(raw)
    if idempotency is not None and (replay := replay_if_answered(idempotency)) is not None:
        return replay
    try:
        body = parse_json(raw)
    except InvalidJson as exc:
        raise InvalidJson(f"The request body is not valid JSON: {exc.details['reason']}") from None
    try:
        loaded = load_request(body, mode)
    except RequestRejected as exc:
        raise IntercomRejected([problem.as_dict() for problem in exc.problems]) from None
    job_id = None
    if loaded.job_id is not None:
        job_id = parse_prefixed_id(loaded.job_id, JOB_PREFIX)
        if job_id is None:
            raise JobNotFound(f"job {loaded.job_id[:100]} not found")
    tenant_id = g.principal.tenant_id

    def work(conn: psycopg.Connection, _attempt: int) -> tuple[dict, int]:
        try:
            submitted = jobs.submit_job_task(conn, tenant_id, loaded.rows, job_id)
        except jobs.JobNotFound:
            raise JobNotFound(f"job {loaded.job_id} not found") from None
        except jobs.JobClosed:
            raise JobClosed(f"job {loaded.job_id} is closed for new task updates") from None
        job = jobs.find_job(conn, tenant_id, submitted)
        assert job is not None  # made or locked just now, in this transaction
        return intercom_job(job), 202

    return run_write(work, idempotency)


def intercom_job(job: dict[str, Any]) -> dict[str, Any]:
    """A job in Intercom's shape (contacts_bulk_job), its url absolute from the request's host."""
    tasks = [{"id": f"{TASK_PREFIX}{task['id']}", "item_count": task["item_count"],
              "state": TASK_STATES[task["status"]], "created_at": unix(task["created_at"]),
              "started_at": unix(task["started_at"]), "completed_at": unix(task["completed_at"])}
             for task in job["tasks"]]
    job_ref = f"{JOB_PREFIX}{job['id']}"
    return {"id": job_ref, "type": "contacts.bulk.job", "state": job_state(job, tasks),
            "created_at": unix(job["created_at"]), "updated_at": unix(job["updated_at"]),
            "completed_at": unix(job["closed_at"]), "tasks": tasks,
            "url": url_for("intercom.get_job", job_id=job_ref, _external=True)}


def job_state(job: dict[str, Any], tasks: list[dict[str, Any]]) -> str:
    """completed (with errors, if a task had some) once closed; running once a
    task started; else pending."""
    if job["closed_at"] is not None:
        with_errors = any(task["state"] == "completed_with_errors" for task in tasks)
        return "completed_with_errors" if with_errors else "completed"
    return "running" if any(task["started_at"] is not None for task in tasks) else "pending"


def unix(moment: datetime | None) -> int | None:
    """Unix seconds, as Intercom gives times; None stays None."""
    return None if moment is None else int(moment.timestamp())
