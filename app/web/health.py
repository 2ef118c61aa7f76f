"""Liveness and readiness probes: no token needed, nothing about the tenants."""

from flask import Blueprint

from app.db import get_conn, ping

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    """The process is up and answering; says nothing about the database."""
    return {"status": "ok"}


@bp.get("/ready")
def ready():
    """The database answers a query (else 503 database_unavailable)."""
    with get_conn() as conn:
        ping(conn)
    return {"status": "ready"}
