"""Batch tasks (DESIGN 10): writes accepted now and applied in the background.

A door calls `submit_task` in its request's transaction: the task and its
rows, cut into chunks, are stored, and nothing else happens. Workers
(app/workers/tasks.py) then repeat: `claim_chunk` (a lease, in one short
statement), and `apply_chunk` in one transaction that holds the chunk's row
lock and checks the lease, writes the rows through the same engine as the
synchronous doors (app/engine/bulk.py), keeps their outcomes, adds them to
the task's counters and marks the chunk done. Killed at any instant, a worker
leaves either all of that or none of it, so nothing is applied twice or
lost and the counters equal the results.

A worker only claims its tenant's oldest pending chunk, so a tenant's chunks
apply in the order they were submitted, across tasks.

Plain values in and out; no Flask, and no commit except in the claim.
"""

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Json

from app.engine.bulk import (
    DELETED,
    BulkOptions,
    BulkReport,
    bulk_intercom,
    bulk_update_by_id,
    bulk_upsert,
    known_addresses,
    row_outcomes,
    validate_rows,
    write_valid_rows,
)
from app.engine.erasure import mentions_of, row_mentions
from app.engine.outbox import enqueue_task_event, iso_timestamp
from app.engine.upsert import CREATED, FAILED, STALE, UNCHANGED, UPDATED
from app.sql import queries

CHUNK_ROWS = 500
NATIVE, INRO, INTERCOM = "contacts.bulk_update", "inro.contacts.bulk", "intercom.contacts.bulk"
FINISHED = ("completed", "completed_with_errors", "cancelled", "failed")


@dataclass(frozen=True)
class ClaimedChunk:
    """A chunk a worker holds the lease of."""

    tenant_id: int
    task_id: int
    seq: int
    attempts: int  # including the claim that made this lease
    lease_id: uuid.UUID


def submit_task(conn: psycopg.Connection, tenant_id: int, kind: str, rows: list[Any], *,
                run_workflow: bool, job_id: int | None = None) -> int:
    """Store a task and its rows in chunks, in the caller's transaction; return its id.
    A task with no rows (every Inrō identifier unknown) is completed at once.
    `job_id` is the job it belongs to, which the caller has locked (app/engine/jobs.py)."""
    task_id = conn.execute(queries["insert-task"], {
        "tenant_id": tenant_id, "kind": kind, "run_workflow": run_workflow,
        "total_count": len(rows), "job_id": job_id}).fetchone()["id"]
    if not rows:
        conn.execute(queries["complete-empty-task"], {"tenant_id": tenant_id, "task_id": task_id})
        announce_completion(conn, tenant_id, task_id)
        return task_id
    starts = range(0, len(rows), CHUNK_ROWS)
    conn.execute(queries["insert-task-chunks"], {
        "tenant_id": tenant_id, "task_id": task_id,
        "seqs": list(range(len(starts))), "first_indexes": list(starts),
        "row_counts": [len(rows[start:start + CHUNK_ROWS]) for start in starts],
        # ASCII escapes and the non-standard Infinity: every value a body can
        # parse to comes back from json.loads as it was, valid or not.
        "rows": [json.dumps(rows[start:start + CHUNK_ROWS]) for start in starts],
        "mentions": [Json(row_mentions(rows[start:start + CHUNK_ROWS])) for start in starts],
    })
    return task_id


def claim_chunk(conn: psycopg.Connection, lease_seconds: float) -> ClaimedChunk | None:
    """Claim the next chunk that may be applied, for `lease_seconds`; None when none is due."""
    lease_id = uuid.uuid4()
    row = conn.execute(queries["claim-task-chunk"],
                       {"lease_id": lease_id, "lease_seconds": float(lease_seconds)}).fetchone()
    return None if row is None else ClaimedChunk(**row, lease_id=lease_id)


def apply_chunk(conn: psycopg.Connection, chunk: ClaimedChunk, *, give_up: bool,
                exclusive: bool = False) -> str | None:
    """Apply a claimed chunk in the caller's transaction; return the task's
    status after it, or None when the lease was lost (nothing done).

    `give_up` (the chunk used up its attempts: every earlier worker died or
    failed on it) records its rows as failed instead of applying them, so a
    chunk that kills workers cannot stop its tenant's queue forever.
    """
    key = {"tenant_id": chunk.tenant_id, "task_id": chunk.task_id, "seq": chunk.seq}
    held = conn.execute(queries["lock-claimed-chunk"], {**key, "lease_id": chunk.lease_id}).fetchone()
    if held is None:
        return None
    if give_up:
        outcomes = [{"index": i, "id": None, "status": FAILED, "code": "internal_error",
                     "message": "This row could not be applied; send it again."}
                    for i in range(held["row_count"])]
    else:
        outcomes = chunk_outcomes(conn, chunk.tenant_id, held, exclusive=exclusive)
    for outcome in outcomes:
        outcome["index"] += held["first_index"]
    conn.execute(queries["mark-chunk-done"], {**key, "results": Json(outcomes),
                                              "mentions": mentions_of(outcomes)})
    counts = {status: sum(1 for o in outcomes if o["status"] == status)
              for status in (CREATED, UPDATED, UNCHANGED, STALE, DELETED, FAILED)}
    status = conn.execute(queries["count-chunk-outcomes"], {
        "tenant_id": chunk.tenant_id, "task_id": chunk.task_id, "processed": len(outcomes),
        "created": counts[CREATED], "updated": counts[UPDATED],
        "unchanged": counts[UNCHANGED], "stale": counts[STALE], "deleted": counts[DELETED],
        "failed": counts[FAILED]}).fetchone()["status"]
    if status in ("completed", "completed_with_errors"):
        announce_completion(conn, chunk.tenant_id, chunk.task_id)
        close_job_if_finished(conn, chunk.tenant_id, chunk.task_id)
    return status


def chunk_outcomes(conn: psycopg.Connection, tenant_id: int, held: dict[str, Any], *,
                   exclusive: bool) -> list[dict[str, Any]]:
    """Apply a held chunk's rows; every row's outcome, by its index in the chunk.
    Rows an erasure dropped (app/engine/erasure.py) are not applied: they fail
    with contact_erased, and the others are validated again."""
    rows, erased = json.loads(held["rows"]), set(held["erased_indexes"])
    options = BulkOptions(run_workflow=held["run_workflow"], return_results=True)
    if not erased:
        return row_outcomes(apply_rows(conn, tenant_id, held["kind"], rows, held["prepared"], options,
                                       exclusive=exclusive))
    kept = [index for index in range(len(rows)) if index not in erased]
    outcomes = [{"index": index, "id": None, "status": FAILED, "code": "contact_erased",
                 "message": "The contact this row names was deleted after the row was sent; "
                            "the row was dropped with it."} for index in range(len(rows))]
    if kept:
        applied = apply_rows(conn, tenant_id, held["kind"], [rows[index] for index in kept], None, options,
                             exclusive=exclusive)
        for outcome in row_outcomes(applied):
            outcome["index"] = kept[outcome["index"]]
            outcomes[outcome["index"]] = outcome
    return outcomes


def close_job_if_finished(conn: psycopg.Connection, tenant_id: int, task_id: int) -> None:
    """A task just ended, in this transaction: if it belongs to a job (Intercom's
    door) and that job has no unfinished task left, close the job. The job row
    is locked first, as an append locks it (see lock-open-job), so a task
    appended meanwhile is either seen here or refused there."""
    job = conn.execute(queries["lock-job-of-task"], {"tenant_id": tenant_id, "task_id": task_id}).fetchone()
    if job is not None:
        conn.execute(queries["close-finished-job"], {"tenant_id": tenant_id, "job_id": job["id"]})


def announce_completion(conn: psycopg.Connection, tenant_id: int, task_id: int) -> None:
    """The `batch_task.completed` event of a task that just ended, in its transaction."""
    task = find_task(conn, tenant_id, task_id)
    assert task is not None  # ended just now, in this transaction
    enqueue_task_event(conn, tenant_id, task_view(task))


def apply_rows(conn: psycopg.Connection, tenant_id: int, kind: str, rows: list[Any],
               prepared: dict[str, Any] | None, options: BulkOptions, *, exclusive: bool) -> BulkReport:
    """A chunk's rows through the engine of the door that submitted them;
    native rows that a worker validated ahead (`prepare_chunk`) skip validation."""
    if kind == INRO:
        return bulk_update_by_id(conn, tenant_id, rows, options, exclusive=exclusive)
    if kind == INTERCOM:
        return bulk_intercom(conn, tenant_id, rows, options, exclusive=exclusive)
    if prepared is not None:
        valid = [(index, row) for index, row in prepared["valid"]]
        return write_valid_rows(conn, tenant_id, rows, valid, prepared["invalid"], options,
                                exclusive=exclusive)
    return bulk_upsert(conn, tenant_id, rows, options, exclusive=exclusive)


def prepare_chunk(conn: psycopg.Connection) -> bool:
    """Validate ahead the oldest pending chunk that nobody validated or is
    applying, and store the result on it; False when there is none.

    A tenant's chunks apply one at a time, but validating a row depends on
    no other row, so an idle worker validates the next chunks while another
    applies the current one: a single task then uses more than one worker.
    Autocommit statements, no lock held while validating.
    """
    chunk = conn.execute(queries["select-chunk-to-prepare"]).fetchone()
    if chunk is None:
        return False
    rows = json.loads(chunk["rows"])
    valid, invalid = validate_rows(rows, known_addresses(conn, chunk["tenant_id"], rows))
    conn.execute(queries["store-prepared-rows"], {
        "tenant_id": chunk["tenant_id"], "task_id": chunk["task_id"], "seq": chunk["seq"],
        "prepared": Json({"valid": valid, "invalid": invalid})})
    return True


def find_task(conn: psycopg.Connection, tenant_id: int, task_id: int) -> dict[str, Any] | None:
    """One task with its progress, or None (not this tenant's, or purged)."""
    row = conn.execute(queries["select-task"], {"tenant_id": tenant_id, "task_id": task_id}).fetchone()
    return None if row is None else with_progress(row)


def list_tasks(conn: psycopg.Connection, tenant_id: int, *, before_id: int | None,
               limit: int) -> tuple[list[dict[str, Any]], bool]:
    """A page of the tenant's tasks, newest first, older than `before_id`; and whether more follow."""
    rows = conn.execute(queries["select-tasks"], {"tenant_id": tenant_id, "before_id": before_id,
                                                  "limit": limit + 1}).fetchall()
    return [with_progress(row) for row in rows[:limit]], len(rows) > limit


def with_progress(task: dict[str, Any]) -> dict[str, Any]:
    """The task with its progress percentage and estimated completion time added."""
    total, processed = task["total_count"], task["processed_count"]
    percentage = 100 if total == 0 or task["status"] in FINISHED else processed * 100 // total
    return {**task, "progress_percentage": percentage,
            "estimated_completion_time": estimated_completion(task)}


def task_view(task: dict[str, Any]) -> dict[str, Any]:
    """A task as the native door and its webhook events show it (DESIGN 10)."""
    return {
        "id": task["id"], "kind": task["kind"], "status": task["status"],
        "totalCount": task["total_count"], "processedCount": task["processed_count"],
        "createdCount": task["created_count"], "updatedCount": task["updated_count"],
        "unchangedCount": task["unchanged_count"], "failedCount": task["failed_count"],
        "staleCount": task["stale_count"], "deletedCount": task["deleted_count"],
        "progressPercentage": task["progress_percentage"],
        "estimatedCompletionTime": iso_or_none(task["estimated_completion_time"]),
        "createdAt": iso_or_none(task["created_at"]), "startedAt": iso_or_none(task["started_at"]),
        "completedAt": iso_or_none(task["completed_at"]),
    }


def iso_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else iso_timestamp(moment)


def estimated_completion(task: dict[str, Any]) -> datetime | None:
    """now + elapsed x remaining / processed once a first chunk is done (DESIGN 10);
    the completion time itself once the task ended."""
    if task["completed_at"] is not None:
        return task["completed_at"]
    started, processed = task["started_at"], task["processed_count"]
    if started is None or processed == 0:
        return None
    now = task["read_at"]
    return now + (now - started) * ((task["total_count"] - processed) / processed)


def task_results(conn: psycopg.Connection, tenant_id: int, task_id: int, *, from_index: int,
                 limit: int) -> list[dict[str, Any]]:
    """Up to `limit` row outcomes from row `from_index` on, in row order, as far
    as the task has got: a row of a chunk not yet applied is not listed, and a
    row of a chunk skipped by a cancel is `skipped`."""
    chunks = conn.execute(queries["select-task-results"], {
        "tenant_id": tenant_id, "task_id": task_id, "from_index": from_index,
        "chunks": limit // CHUNK_ROWS + 2}).fetchall()
    results: list[dict[str, Any]] = []
    for chunk in chunks:
        if chunk["state"] == "pending":
            break  # later rows have no outcome yet
        if chunk["state"] == "skipped":
            outcomes = [{"index": chunk["first_index"] + i, "id": None, "status": "skipped"}
                        for i in range(chunk["row_count"])]
        else:
            outcomes = chunk["results"]
        results.extend(o for o in outcomes if o["index"] >= from_index)
        if len(results) >= limit:
            break
    return results[:limit]


def cancel_task(conn: psycopg.Connection, tenant_id: int, task_id: int) -> dict[str, Any] | None:
    """Skip the task's chunks not yet applied and end it `cancelled`, in the
    caller's transaction; a task that already ended is left as it is. Returns
    the task, or None when the tenant has no such task."""
    key = {"tenant_id": tenant_id, "task_id": task_id}
    conn.execute(queries["skip-pending-chunks"], key)
    if conn.execute(queries["cancel-task"], key).rowcount:
        close_job_if_finished(conn, tenant_id, task_id)
    return find_task(conn, tenant_id, task_id)


def purge_finished_tasks(conn: psycopg.Connection, retention_days: int, limit: int = 1000) -> int:
    """Delete up to `limit` tasks that ended more than `retention_days` ago; return how many."""
    return conn.execute(queries["purge-finished-tasks"],
                        {"retention_days": retention_days, "limit": limit}).rowcount
