"""Inrō's door (DESIGN 11, seed 000): bulk updates by id, username or email,
applied in the background as a batch task, and the tasks in Inrō's words.

| PUT /api/v1/contacts/bulk        | contacts:write | 1-1000 entries; 202 with the task and not_found |
| GET /api/v1/batch_tasks          | jobs:read      | the tenant's tasks, newest first                |
| GET /api/v1/batch_tasks/{id}     | jobs:read      | one task with progress and ETA                  |

Answers are Inrō's bare objects (no success/data envelope); errors are ours.
"""

import psycopg
from flask import Blueprint, g

from app.auth import require_scope
from app.db import get_conn
from app.engine.tasks import find_task, list_tasks
from app.engine.updates import inro_task_view, queue_updates
from app.errors import NotFound
from app.schemas.inro import MAX_ENTRIES, inro_bulk_request_schema, load_entries
from app.web.body import load_entry_request, read_body
from app.web.writes import idempotency_of_request, replay_if_answered, run_write

bp = Blueprint("inro", __name__, url_prefix="/api/v1")

MAX_LISTED_TASKS = 100


@bp.put("/contacts/bulk")
@require_scope("contacts:write")
def bulk_update():
    """Check every entry (400 naming each bad one, nothing queued), resolve the
    identifiers, queue the matched entries; 202."""
    raw = read_body()
    idempotency = idempotency_of_request(raw)
    if idempotency is not None and (replay := replay_if_answered(idempotency)) is not None:
        return replay
    sent, entries = load_entry_request(raw, inro_bulk_request_schema, load_entries, MAX_ENTRIES,
                                       "nothing was queued")
    tenant_id = g.principal.tenant_id

    def work(conn: psycopg.Connection, _attempt: int) -> tuple[dict, int]:
        return queue_updates(conn, tenant_id, entries, sent).answer(), 202

    return run_write(work, idempotency)


@bp.get("/batch_tasks")
@require_scope("jobs:read")
def list_batch_tasks():
    with get_conn() as conn:
        tasks, _ = list_tasks(conn, g.principal.tenant_id, before_id=None, limit=MAX_LISTED_TASKS)
    return {"batch_tasks": [inro_task_view(task) for task in tasks]}


@bp.get("/batch_tasks/<int:task_id>")
@require_scope("jobs:read")
def get_batch_task(task_id: int):
    with get_conn() as conn:
        task = find_task(conn, g.principal.tenant_id, task_id)
    if task is None:
        raise NotFound("No batch task has this id.")
    return inro_task_view(task)
