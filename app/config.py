"""Settings from environment variables, with the defaults docs/operations.md documents."""

import os
import re
from collections.abc import Mapping
from typing import Any

from limits import parse_many


def _int(environ: Mapping[str, str], name: str, default: int, minimum: int = 0,
         maximum: int | None = None) -> int:
    """Read a whole number, failing at start-up (not per request) when it is not one."""
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value}")
    return value


def _seconds_list(environ: Mapping[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """Read comma-separated seconds (`5,300,1800`), failing at start-up on anything else."""
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        values = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise ValueError(f"{name} must be comma-separated seconds, got {raw!r}") from None
    if any(not 0 <= value <= 7 * 86400 for value in values):
        raise ValueError(f"{name} values must be 0 to 604800 seconds, got {raw!r}")
    return values


DURATION = re.compile(r"(\d+)\s*([smhd]?)")
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(environ: Mapping[str, str], name: str, default: int, maximum: int) -> int:
    """Read seconds, or a duration such as 90s, 15m, 24h or 7d, up to `maximum`
    seconds; fail at start-up otherwise."""
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    match = DURATION.fullmatch(raw.strip().lower())
    seconds = int(match.group(1)) * DURATION_UNITS[match.group(2)] if match else 0
    if not 0 < seconds <= maximum:
        raise ValueError(f"{name} must be seconds or a duration such as 24h, "
                         f"at most {maximum // 86400} days, got {raw!r}")
    return seconds


def _rate_limit(environ: Mapping[str, str], name: str, default: str) -> str | None:
    """Read a rate limit such as 600/minute (or `off`: None), failing at start-up on anything else."""
    raw = environ.get(name, "").strip() or default
    if raw.lower() == "off":
        return None
    try:
        parse_many(raw)
    except ValueError:
        raise ValueError(f"{name} must be a rate such as 600/minute, or off, got {raw!r}") from None
    return raw


def _storage_uri(environ: Mapping[str, str], name: str) -> str:
    """memory:// (the default) or a redis:// or rediss:// URL."""
    raw = environ.get(name, "").strip() or "memory://"
    if not raw.startswith(("memory://", "redis://", "rediss://")):
        raise ValueError(f"{name} must be memory:// or a redis:// URL, got a {raw.split(':')[0]!r} URL")
    return raw


def _flag(environ: Mapping[str, str], name: str) -> bool:
    """A yes/no setting: 1, true or yes (any case) means yes."""
    return environ.get(name, "").strip().lower() in ("1", "true", "yes")


# After a failed attempt, wait this long before the next: 8 attempts over
# about 27 hours, the schedule Standard Webhooks senders commonly use.
DEFAULT_WEBHOOK_BACKOFF = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


def load_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Build the Flask config mapping from the environment."""
    env = os.environ if environ is None else environ
    return {
        # Unset: an embedded PostgreSQL under CONTACTSYNC_DATA_DIR.
        "DATABASE_URL": env.get("DATABASE_URL") or None,
        "DATA_DIR": env.get("CONTACTSYNC_DATA_DIR", ".data"),
        "BULK_MAX": _int(env, "CONTACTSYNC_BULK_MAX", 1000, minimum=1),
        "MAX_BODY_BYTES": _int(env, "CONTACTSYNC_MAX_BODY_BYTES", 5 * 1024 * 1024, minimum=1024),
        "DB_POOL_MIN": _int(env, "CONTACTSYNC_DB_POOL_MIN", 1, minimum=0),
        "DB_POOL_MAX": _int(env, "CONTACTSYNC_DB_POOL_MAX", 4, minimum=1),
        "DB_POOL_TIMEOUT": _int(env, "CONTACTSYNC_DB_POOL_TIMEOUT", 5, minimum=1),
        "STATEMENT_TIMEOUT_MS": _int(env, "CONTACTSYNC_STATEMENT_TIMEOUT_MS", 30_000, minimum=0),
        "LOCK_TIMEOUT_MS": _int(env, "CONTACTSYNC_LOCK_TIMEOUT_MS", 10_000, minimum=0),
        "TX_ATTEMPTS": _int(env, "CONTACTSYNC_TX_ATTEMPTS", 5, minimum=1),
        "WEBHOOK_BACKOFF": _seconds_list(env, "CONTACTSYNC_WEBHOOK_BACKOFF", DEFAULT_WEBHOOK_BACKOFF),
        # At most 20: a claim's lease is the timeout + 5 s, and a dead dispatcher's
        # events must be out again within 30 s.
        "WEBHOOK_TIMEOUT": _int(env, "CONTACTSYNC_WEBHOOK_TIMEOUT", 10, minimum=1, maximum=20),
        "WEBHOOK_ALLOW_PRIVATE": _flag(env, "CONTACTSYNC_WEBHOOK_ALLOW_PRIVATE"),
        "WEBHOOK_CONCURRENCY": _int(env, "CONTACTSYNC_WEBHOOK_CONCURRENCY", 4, minimum=1),
        "WEBHOOK_RETENTION_DAYS": _int(env, "CONTACTSYNC_WEBHOOK_RETENTION_DAYS", 7, minimum=1),
        # Tombstones of deleted contacts stay in the change feed this long (DESIGN 9).
        "TOMBSTONE_RETENTION_DAYS": _int(env, "CONTACTSYNC_TOMBSTONE_RETENTION_DAYS", 30, minimum=1),
        "IDEMPOTENCY_TTL_SECONDS": _duration(env, "CONTACTSYNC_IDEMPOTENCY_TTL", 24 * 3600,
                                             maximum=365 * 86400),
        # Batch tasks (DESIGN 10): the limits of one submission, the lease of a
        # claimed chunk (a worker that died holds its chunk this long), the
        # claims a chunk gets before its rows are failed, and the retention.
        "TASK_MAX_ROWS": _int(env, "CONTACTSYNC_TASK_MAX_ROWS", 100_000, minimum=1),
        "TASK_MAX_BODY_BYTES": _int(env, "CONTACTSYNC_TASK_MAX_BODY_BYTES", 64 * 1024 * 1024,
                                    minimum=1024),
        "TASK_LEASE_SECONDS": _int(env, "CONTACTSYNC_TASK_LEASE_SECONDS", 30, minimum=1, maximum=3600),
        "TASK_MAX_ATTEMPTS": _int(env, "CONTACTSYNC_TASK_MAX_ATTEMPTS", 10, minimum=1),
        "TASK_RETENTION_DAYS": _int(env, "CONTACTSYNC_TASK_RETENTION_DAYS", 7, minimum=1),
        "RATE_LIMIT": _rate_limit(env, "CONTACTSYNC_RATE_LIMIT", "600/minute"),
        "RATE_LIMIT_STORAGE": _storage_uri(env, "CONTACTSYNC_RATE_LIMIT_STORAGE"),
    }
