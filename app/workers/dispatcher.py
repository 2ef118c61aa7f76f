"""The workflow dispatcher behind `flask --app app workflows run`.

Each of its threads (app/workers/runner.py) repeats: claim one due event (a lease, in one short
statement), deliver it with no transaction open, settle it. Any number of
dispatchers, on any machines, may run against one database: SKIP LOCKED keeps
them off each other's events, and an event whose dispatcher died is due again
when its lease runs out. Delivery is therefore at least once; receivers drop
repeats by `webhook-id`.
"""

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from app.engine.erasure import purge_tombstones
from app.engine.idempotency import purge_expired_keys
from app.engine.outbox import (
    ClaimedEvent,
    claim_due_event,
    iso_timestamp,
    purge_finished_events,
    settle_event,
)
from app.workers import runner, webhooks

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 1.0
LEASE_MARGIN_SECONDS = 5.0


@dataclass(frozen=True)
class DispatchSettings:
    """How the dispatcher sends: the retry schedule, the per-attempt timeout, the address rule."""

    backoff: Sequence[float]  # seconds before attempt 2, 3, ...; then the event is dead
    timeout: float
    allow_private: bool
    poll_seconds: float = IDLE_POLL_SECONDS
    retention_days: int = 7  # delivered and dead events are purged after this
    tombstone_retention_days: int = 30  # tombstones of deleted contacts are purged after this

    @property
    def lease_seconds(self) -> float:
        """How long a claim lasts: the attempt's bound (name lookup included)
        and a margin to settle it, so a live dispatcher settles in time."""
        return self.timeout + LEASE_MARGIN_SECONDS

    @property
    def max_attempts(self) -> int:
        return 1 + len(self.backoff)

    def retry_in(self, attempts: int) -> float | None:
        """Seconds until the next attempt after `attempts` failed ones; None: give up."""
        return self.backoff[attempts - 1] if attempts <= len(self.backoff) else None


def settings_from_config(config: dict) -> DispatchSettings:
    """The dispatcher settings of an app's config."""
    return DispatchSettings(backoff=config["WEBHOOK_BACKOFF"], timeout=config["WEBHOOK_TIMEOUT"],
                            allow_private=config["WEBHOOK_ALLOW_PRIVATE"],
                            retention_days=config["WEBHOOK_RETENTION_DAYS"],
                            tombstone_retention_days=config["TOMBSTONE_RETENTION_DAYS"])


def attempt(event: ClaimedEvent, settings: DispatchSettings) -> webhooks.DeliveryResult:
    """Send one attempt of a claimed event; a bug on the way fails the attempt, not the loop,
    so the event still moves along its schedule."""
    try:
        body = webhooks.event_body(event.type, iso_timestamp(event.created_at),
                                   event.tenant_slug, event.contact, event.changed_fields,
                                   event.batch_task)
        return webhooks.deliver(event.webhook_url, event.webhook_secret, event.event_id, body,
                                timeout=settings.timeout, allow_private=settings.allow_private)
    except Exception as exc:
        log.exception("attempt of %s failed on our side", event.event_id)
        return webhooks.DeliveryResult(ok=False, error=f"internal error: {type(exc).__name__}")


def dispatch_one(pool: ConnectionPool, settings: DispatchSettings) -> bool:
    """Claim, deliver and settle one due event; False when none was due."""
    with pool.connection() as conn:
        event = claim_due_event(conn, settings.lease_seconds)
    if event is None:
        return False
    if event.attempts > settings.max_attempts:
        # Earlier claims never settled: their dispatchers died mid-attempt, as
        # an event that kills its sender would make them do forever.
        result = webhooks.DeliveryResult(ok=False, error="attempts used up by dispatchers that stopped")
    else:
        result = attempt(event, settings)  # no connection held while the receiver answers
    retry_in = None if result.ok else settings.retry_in(event.attempts)
    with pool.connection() as conn:
        settle_event(conn, event, delivered=result.ok, error=result.error, retry_in=retry_in)
    if result.ok:
        log.info("delivered %s (%s) to tenant %s", event.event_id, event.type, event.tenant_slug)
    else:
        outcome = "dead" if retry_in is None else f"retry in {retry_in:g} s"
        log.warning("attempt %d of %s failed: %s; %s", event.attempts, event.event_id, result.error,
                    outcome)
    return True


def run_loop(pool: ConnectionPool, settings: DispatchSettings, stop: threading.Event) -> None:
    """Dispatch until `stop` is set; database trouble is waited out, not fatal."""
    runner.repeat(lambda: dispatch_one(pool, settings), stop, settings.poll_seconds, "dispatcher")


def purge(pool: ConnectionPool, settings: DispatchSettings) -> None:
    """Delete finished events and tombstones past their retention and expired
    idempotency keys, a slice at a time; database trouble waits for the next round. (The dispatcher
    is the one long-running process of a deployment, so it does the upkeep.)"""
    try:
        with pool.connection() as conn:
            while (deleted := purge_finished_events(conn, settings.retention_days)) > 0:
                log.info("purged %d finished events older than %d days", deleted,
                         settings.retention_days)
            while (deleted := purge_expired_keys(conn)) > 0:
                log.info("purged %d expired idempotency keys", deleted)
            while (deleted := purge_tombstones(conn, settings.tombstone_retention_days)) > 0:
                log.info("purged %d tombstones older than %d days", deleted,
                         settings.tombstone_retention_days)
    except (psycopg.OperationalError, PoolTimeout) as exc:
        log.warning("purge skipped, database unavailable: %s", type(exc).__name__)
