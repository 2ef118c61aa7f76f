"""The batch-task worker behind `flask --app app tasks run` (DESIGN 10).

Each of its threads (app/workers/runner.py) repeats: claim the next chunk that may be applied (a
lease, in one short statement), then apply it in one transaction
(app/engine/tasks.py), retried on races as the synchronous doors retry;
with no chunk due, validate one ahead that another worker will apply. Any
number of workers, on any machines, may run against one database: SKIP
LOCKED keeps them off each other's chunks, and a chunk whose worker died is
due again when its lease runs out.
"""

import logging
import threading
from dataclasses import dataclass

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from app.db import run_in_transaction
from app.engine.jobs import purge_closed_jobs
from app.engine.tasks import ClaimedChunk, apply_chunk, claim_chunk, prepare_chunk, purge_finished_tasks
from app.workers import runner

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class TaskSettings:
    """How a worker applies chunks."""

    lease_seconds: float  # a claim's length: far more than a chunk takes to apply
    max_attempts: int  # claims of one chunk before its rows are failed instead
    tx_attempts: int  # tries of the applying transaction on races
    retention_days: int  # finished tasks are purged after this
    poll_seconds: float = 0.5


def settings_from_config(config: dict) -> TaskSettings:
    """The worker settings of an app's config."""
    return TaskSettings(lease_seconds=config["TASK_LEASE_SECONDS"],
                        max_attempts=config["TASK_MAX_ATTEMPTS"], tx_attempts=config["TX_ATTEMPTS"],
                        retention_days=config["TASK_RETENTION_DAYS"])


def work_one(pool: ConnectionPool, settings: TaskSettings) -> bool:
    """Claim and apply one chunk, or else validate one ahead; False when there was nothing to do."""
    with pool.connection() as conn:
        chunk = claim_chunk(conn, settings.lease_seconds)
        if chunk is None:
            return prepare_chunk(conn)
        give_up = chunk.attempts > settings.max_attempts
        if give_up:
            log.error("chunk %d of task %d used up %d attempts; its rows are failed",
                      chunk.seq, chunk.task_id, settings.max_attempts)
        status = run_in_transaction(
            conn, lambda c, attempt: apply_chunk(c, chunk, give_up=give_up, exclusive=attempt > 1),
            attempts=settings.tx_attempts)
    log_applied(chunk, status)
    return True


def log_applied(chunk: ClaimedChunk, status: str | None) -> None:
    if status is None:
        log.warning("lease on chunk %d of task %d was lost; another worker has it",
                    chunk.seq, chunk.task_id)
    else:
        log.info("applied chunk %d of task %d (tenant %d): task %s", chunk.seq, chunk.task_id,
                 chunk.tenant_id, status)


def run_loop(pool: ConnectionPool, settings: TaskSettings, stop: threading.Event) -> None:
    """Apply chunks until `stop` is set; a chunk that failed on a bug is tried
    again when its lease runs out."""
    runner.repeat(lambda: work_one(pool, settings), stop, settings.poll_seconds, "task worker")


def purge(pool: ConnectionPool, settings: TaskSettings) -> None:
    """Delete tasks that ended before the retention, a slice at a time."""
    try:
        with pool.connection() as conn:
            while (deleted := purge_finished_tasks(conn, settings.retention_days)) > 0:
                log.info("purged %d batch tasks older than %d days", deleted, settings.retention_days)
            while (deleted := purge_closed_jobs(conn, settings.retention_days)) > 0:
                log.info("purged %d jobs older than %d days", deleted, settings.retention_days)
    except (psycopg.OperationalError, PoolTimeout) as exc:
        log.warning("task purge skipped, database unavailable: %s", type(exc).__name__)
