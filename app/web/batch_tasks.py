"""Batch tasks blueprint (DESIGN 10): watch, page the results of, and cancel
the tasks the asynchronous doors submit.

| GET /batch-tasks                  | jobs:read  | the tenant's tasks, newest first, cursor-paged   |
| GET /batch-tasks/{id}             | jobs:read  | one task with its progress (one indexed read)    |
| GET /batch-tasks/{id}/results     | jobs:read  | row outcomes, paged; NDJSON or CSV with Accept   |
| DELETE /batch-tasks/{id}          | jobs:write | cancel: chunks not yet applied are skipped       |
"""

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import psycopg
from flask import Blueprint, Response, g, request, stream_with_context
from marshmallow import ValidationError

from app.auth import require_scope
from app.db import get_conn, run_in_transaction
from app.engine.tasks import cancel_task, find_task, list_tasks, task_results, task_view
from app.errors import InvalidCursor, InvalidRequest, NotFound
from app.schemas.tasks import task_page_query_schema

bp = Blueprint("batch_tasks", __name__)

STREAM_PAGE_ROWS = 5000
NDJSON, CSV = "application/x-ndjson", "text/csv"
CSV_COLUMNS = ("index", "id", "status", "changedFields", "code", "message", "externalId", "email", "errors",
               "conflict")


@bp.get("/batch-tasks")
@require_scope("jobs:read")
def list_batch_tasks():
    query = load_page_query()
    with get_conn() as conn:
        tasks, has_more = list_tasks(conn, g.principal.tenant_id, before_id=cursor_value(query),
                                     limit=query["limit"])
    return {"success": True, "data": [task_view(task) for task in tasks],
            "nextCursor": str(tasks[-1]["id"]) if has_more else None, "hasMore": has_more}


@bp.get("/batch-tasks/<int:task_id>")
@require_scope("jobs:read")
def get_batch_task(task_id: int):
    return {"success": True, "data": task_view(existing_task(task_id))}


@bp.get("/batch-tasks/<int:task_id>/results")
@require_scope("jobs:read")
def get_batch_task_results(task_id: int):
    """A page of row outcomes from `cursor` (a row index) on; with Accept
    NDJSON or CSV, every outcome so far, streamed."""
    query = load_page_query()
    existing_task(task_id)
    start = cursor_value(query) or 0
    wanted = request.accept_mimetypes.best_match(["application/json", NDJSON, CSV])
    if wanted in (NDJSON, CSV):
        return Response(stream_with_context(stream_results(task_id, start, wanted)), mimetype=wanted)
    with get_conn() as conn:
        results = task_results(conn, g.principal.tenant_id, task_id, from_index=start,
                               limit=query["limit"] + 1)
    page, has_more = results[:query["limit"]], len(results) > query["limit"]
    return {"success": True, "data": page,
            "nextCursor": str(page[-1]["index"] + 1) if page else str(start), "hasMore": has_more}


@bp.delete("/batch-tasks/<int:task_id>")
@require_scope("jobs:write")
def cancel_batch_task(task_id: int):
    """Cancel: what is not applied yet is skipped; a task that ended stays as it ended."""
    tenant_id = g.principal.tenant_id

    def cancel(conn: psycopg.Connection, _attempt: int) -> dict[str, Any] | None:
        return cancel_task(conn, tenant_id, task_id)

    with get_conn() as conn:
        task = run_in_transaction(conn, cancel, attempts=3)
    if task is None:
        raise NotFound("No batch task has this id.")
    return {"success": True, "data": task_view(task)}


def existing_task(task_id: int) -> dict[str, Any]:
    """The caller's task with this id, or 404 (another tenant's is not found either)."""
    with get_conn() as conn:
        task = find_task(conn, g.principal.tenant_id, task_id)
    if task is None:
        raise NotFound("No batch task has this id.")
    return task


def load_page_query() -> dict[str, Any]:
    try:
        return task_page_query_schema.load(request.args.to_dict())
    except ValidationError as exc:
        raise InvalidRequest(details=exc.messages) from None


def cursor_value(query: dict[str, Any]) -> int | None:
    """The cursor as the number it is (a task id, or a row index)."""
    if "cursor" not in query:
        return None
    cursor = query["cursor"]
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18:
        raise InvalidCursor("The cursor is not one this service handed out.")
    return int(cursor)


def stream_results(task_id: int, start: int, mimetype: str) -> Iterator[str]:
    """Every outcome so far, a page per connection borrowed, as NDJSON lines or CSV."""
    tenant_id = g.principal.tenant_id
    if mimetype == CSV:
        yield csv_line(CSV_COLUMNS)
    while True:
        with get_conn() as conn:
            page = task_results(conn, tenant_id, task_id, from_index=start, limit=STREAM_PAGE_ROWS)
        for outcome in page:
            yield json.dumps(outcome, ensure_ascii=False) + "\n" if mimetype == NDJSON \
                else csv_line(csv_cells(outcome))
        if len(page) < STREAM_PAGE_ROWS:
            return
        start = page[-1]["index"] + 1


def csv_cells(outcome: dict[str, Any]) -> list[Any]:
    """An outcome's CSV cells: scalars as they are, nested values as JSON."""
    cells = []
    for column in CSV_COLUMNS:
        value = outcome.get(column)
        cells.append(json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value)
    return cells


def csv_line(cells: Any) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(["" if cell is None else cell for cell in cells])
    return out.getvalue()
