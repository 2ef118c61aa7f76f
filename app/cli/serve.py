"""`contactsync serve` (or `flask --app app serve`): everything a user needs, started and stopped as one.

Applies the schema, creates the demo tenant on a new database, then runs
gunicorn, the webhook dispatcher, the batch-task worker and the MCP server
(streamable HTTP) as child processes until it is asked to stop, or until
one of them exits.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Any

import click
import psycopg
from flask import current_app
from flask.cli import with_appcontext

from app.db import apply_schema, get_conn, pool_of
from app.engine.tenants import create_tenant, has_tenants
from app.engine.tokens import create_token

DEMO_SLUG = "demo"
DEMO_SCOPES = ["contacts:read", "contacts:write", "jobs:read", "jobs:write"]  # every door


def bootstrap_demo_tenant(conn: psycopg.Connection) -> str | None:
    """On a database without tenants, create `demo` and return a new token for it."""
    if has_tenants(conn):
        return None
    tenant = create_tenant(conn, DEMO_SLUG, "Demo")
    token, _ = create_token(conn, tenant["id"], DEMO_SCOPES)
    return token.secret


def print_welcome(base_url: str, mcp_url: str, token: str | None) -> None:
    """Tell the person at the terminal how to reach the service and its MCP server."""
    click.echo(f"\ncontactsync serves on {base_url}, and MCP for agents on {mcp_url}")
    if token is None:
        scopes = " ".join(f"--scope {scope}" for scope in DEMO_SCOPES)
        click.echo(f"Create a token with: .venv/bin/contactsync tokens create demo {scopes}\n")
        return
    body = '{"contacts": [{"externalId": "crm-1", "email": "Alice@Example.com", "firstName": "Alice"}]}'
    click.echo(f"Tenant '{DEMO_SLUG}' created. Its token (shown once): {token}\nTry:\n")
    click.echo(f"  curl -sS -X POST {base_url}/contacts/bulk-update \\\n"
               f"    -H 'Authorization: Bearer {token}' \\\n"
               f"    -H 'Content-Type: application/json' \\\n"
               f"    -d {shlex.quote(body)}\n")
    click.echo(f"Or import a CSV export (docs/command.md):\n\n"
               f"  .venv/bin/contactsync import contacts.csv --url {base_url} --token {token}\n")
    click.echo("An MCP client (Claude Desktop, Cursor, ...) connects with this configuration:\n")
    click.echo(json.dumps(mcp_client_configuration(mcp_url, token), indent=2) + "\n")


def mcp_client_configuration(mcp_url: str, token: str) -> dict:
    """The `mcpServers` entry an agent's host takes for this server."""
    return {"mcpServers": {"contactsync": {
        "type": "http", "url": mcp_url, "headers": {"Authorization": f"Bearer {token}"}}}}


@click.command("serve")
@with_appcontext
@click.option("--host", envvar="HOST", default="127.0.0.1", show_default=True)
@click.option("--port", envvar="PORT", default=8000, type=int, show_default=True)
@click.option("--workers", envvar="WEB_CONCURRENCY", default=2, type=int, show_default=True)
@click.option("--mcp-port", envvar="MCP_PORT", default=8001, type=int, show_default=True)
def serve_command(host: str, port: int, workers: int, mcp_port: int) -> None:
    """Apply the schema, make sure a tenant exists, run gunicorn, the dispatcher,
    the task worker and the MCP server until stopped."""
    with get_conn() as conn:
        apply_schema(conn)
        with conn.transaction():
            token = bootstrap_demo_tenant(conn)
    pool_of(current_app).close()  # the workers open their own

    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    print_welcome(f"http://{shown_host}:{port}", f"http://{shown_host}:{mcp_port}/mcp", token)
    # Every child reaches the same database, embedded or not, through DATABASE_URL.
    env = {**os.environ, "DATABASE_URL": current_app.config["RESOLVED_DATABASE_URL"]}
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}",
         "--workers", str(workers), "--access-logfile", "-", "wsgi:app"],
        env=env)
    dispatcher = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app", "workflows", "run"], env=env)
    task_worker = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app", "tasks", "run"], env=env)
    mcp_server = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app", "mcp", "--http", "--host", host,
         "--port", str(mcp_port)], env=env)
    children = (gunicorn, dispatcher, task_worker, mcp_server)
    # A list, not an Event: a handler that takes a lock deadlocks when a second
    # signal lands while the first one holds it.
    stop_requested: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        # Ctrl-C reaches the whole process group, children included; passing it
        # on as SIGTERM also covers a signal sent to this process alone.
        stop_requested.append(signum)
        terminate(children)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = wait_for_first_exit(children)
    terminate(children)  # one stopped, so stop the others
    for child in children:
        child.wait()
    # Leaving now stops the embedded PostgreSQL (if this process started it).
    # Asked to stop, a child that was still starting may not exit 0: that is no failure.
    if stop_requested:
        sys.exit(0)
    sys.exit(1 if code < 0 else code)  # a child killed by a signal failed too


def wait_for_first_exit(children: tuple[subprocess.Popen, ...]) -> int:
    """Wait until any child exits; return its exit status."""
    while True:
        for child in children:
            if child.poll() is not None:
                return child.returncode
        time.sleep(0.2)


def terminate(children: tuple[subprocess.Popen, ...]) -> None:
    """Ask every child that still runs to stop."""
    for child in children:
        if child.poll() is None:
            child.terminate()
