"""Jobs (Intercom's door, DESIGN 12): a job groups batch tasks, one per request.

A request without a job makes one; a request naming an open job appends its
task to it. A job is open until its last unfinished task ends: the
transaction that ends it (app/engine/tasks.py, `close_job_if_finished`) locks
the job row and closes it, and an append locks the same row and requires it
open, so an append racing the last task either comes first (the job goes on,
and is closed by its new last task) or is refused. A closed job never reopens.

Plain values in and out; no Flask, and no commit.
"""

from datetime import datetime
from typing import Any

import psycopg

from app.engine.tasks import INTERCOM, submit_task
from app.sql import queries


class JobNotFound(Exception):
    """The tenant has no job of this id (another tenant's is not found either)."""


class JobClosed(Exception):
    """The job's tasks have all ended: it takes no task any more."""


def submit_job_task(conn: psycopg.Connection, tenant_id: int, rows: list[dict[str, Any]],
                    job_id: int | None) -> int:
    """Store the rows as a task of job `job_id` (a new job when None), in the
    caller's transaction; return the job's id. Raises JobNotFound, JobClosed."""
    if job_id is None:
        job_id = conn.execute(queries["insert-job"], {"tenant_id": tenant_id}).fetchone()["id"]
    else:
        key = {"tenant_id": tenant_id, "job_id": job_id}
        if conn.execute(queries["lock-open-job"], key).fetchone() is None:
            if conn.execute(queries["select-job-closed"], key).fetchone() is None:
                raise JobNotFound(job_id)
            raise JobClosed(job_id)
    submit_task(conn, tenant_id, INTERCOM, rows, run_workflow=False, job_id=job_id)
    return job_id


def find_job(conn: psycopg.Connection, tenant_id: int, job_id: int) -> dict[str, Any] | None:
    """A job with its tasks in the order appended, or None (not this tenant's, or purged):
    {"id", "created_at", "updated_at", "closed_at", "tasks": [{"id", "status",
    "item_count", "created_at", "started_at", "completed_at"}]}."""
    records = conn.execute(queries["select-job-tasks"], {"tenant_id": tenant_id, "job_id": job_id}).fetchall()
    if not records:
        return None
    first = records[0]
    tasks = [{"id": r["task_id"], "status": r["status"], "item_count": r["total_count"],
              "created_at": r["task_created_at"], "started_at": r["started_at"],
              "completed_at": r["completed_at"]} for r in records if r["task_id"] is not None]
    moments: list[datetime] = [first["updated_at"]]
    for task in tasks:
        moments.extend(m for m in (task["created_at"], task["started_at"], task["completed_at"]) if m)
    return {"id": first["id"], "created_at": first["created_at"], "updated_at": max(moments),
            "closed_at": first["closed_at"], "tasks": tasks}


def purge_closed_jobs(conn: psycopg.Connection, retention_days: int, limit: int = 1000) -> int:
    """Delete up to `limit` jobs (and their tasks) closed more than `retention_days` ago."""
    return conn.execute(queries["purge-closed-jobs"],
                        {"retention_days": retention_days, "limit": limit}).rowcount
