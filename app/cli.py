"""Operator commands: `flask --app app init-db | tenants | tokens | serve`.

Every command prints its errors to stderr and exits non-zero on failure.
"""

import os
import re
import shlex
import signal
import subprocess
import sys
from typing import Any

import click
import psycopg
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from app import auth
from app.db import apply_schema, get_conn
from app.errors import ApiError
from app.sql import queries

tenants_cli = AppGroup("tenants", help="Create tenants.")
tokens_cli = AppGroup("tokens", help="Create, list and revoke API tokens.")

DEMO_SLUG = "demo"
TENANT_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # the same rule as schema.sql's CHECK
DEMO_SCOPES = ["contacts:read", "contacts:write"]


def init_app(app: Flask) -> None:
    """Register the commands on the app."""
    app.cli.add_command(init_db_command)
    app.cli.add_command(serve_command)
    app.cli.add_command(tenants_cli)
    app.cli.add_command(tokens_cli)


def fail(message: str) -> None:
    """Stop the command with a message on stderr and exit status 1."""
    raise click.ClickException(message)


def run_sql(work: Any) -> Any:
    """Run `work(conn)` in one transaction; database trouble becomes a clean failure."""
    try:
        with get_conn() as conn, conn.transaction():
            return work(conn)
    except ApiError as exc:
        fail(exc.message)
    except psycopg.errors.UniqueViolation:
        fail("That already exists.")


def find_tenant(conn: psycopg.Connection, slug: str) -> dict:
    """The tenant with this slug, or a clean failure."""
    tenant = conn.execute(queries["select-tenant-by-slug"], {"slug": slug}).fetchone()
    if tenant is None:
        fail(f"No tenant {slug!r}.")
    return tenant


@click.command("init-db")
@with_appcontext
def init_db_command() -> None:
    """Apply schema.sql (safe to run again)."""
    with get_conn() as conn:
        apply_schema(conn)
    click.echo("Schema applied.")


@tenants_cli.command("create")
@click.argument("slug")
@click.option("--name", help="Display name (default: the slug).")
def create_tenant_command(slug: str, name: str | None) -> None:
    """Create tenant SLUG (lower-case letters, digits and dashes)."""
    if not TENANT_SLUG.fullmatch(slug):
        fail("A slug is 1-63 lower-case letters, digits and dashes, starting with a letter or digit.")
    tenant = run_sql(lambda conn: conn.execute(
        queries["insert-tenant"], {"slug": slug, "name": name or slug}).fetchone())
    click.echo(f"Tenant {tenant['slug']} created (id {tenant['id']}).")


@tokens_cli.command("create")
@click.argument("slug")
@click.option("--scope", "scopes", multiple=True, required=True,
              type=click.Choice(sorted(auth.SCOPES)), help="Repeat for several scopes.")
def create_token_command(slug: str, scopes: tuple[str, ...]) -> None:
    """Create a token for tenant SLUG; the token is printed once, on the last line."""
    token, row = run_sql(lambda conn: auth.create_token(conn, find_tenant(conn, slug)["id"],
                                                       list(scopes)))
    click.echo(f"Token {row['prefix']}... for {slug} with {' '.join(row['scopes'])}."
               " It is shown once; store it now:")
    click.echo(token.secret)


@tokens_cli.command("list")
@click.argument("slug")
def list_tokens_command(slug: str) -> None:
    """List tenant SLUG's tokens (prefixes only, never secrets)."""
    rows = run_sql(lambda conn: conn.execute(
        queries["list-tokens"], {"tenant_id": find_tenant(conn, slug)["id"]}).fetchall())
    for row in rows:
        state = f"revoked {row['revoked_at']:%Y-%m-%d}" if row["revoked_at"] else "active"
        used = f"{row['last_used_at']:%Y-%m-%d %H:%M}" if row["last_used_at"] else "never"
        click.echo(f"{row['prefix']}...  {' '.join(row['scopes'])}  "
                   f"created {row['created_at']:%Y-%m-%d}  last used {used}  {state}")


@tokens_cli.command("revoke")
@click.argument("prefix")
def revoke_token_command(prefix: str) -> None:
    """Revoke the token whose prefix (as `tokens list` shows it) is PREFIX."""
    prefix = prefix.removesuffix("...")
    rows = run_sql(lambda conn: conn.execute(
        queries["revoke-tokens-by-prefix"], {"prefix": prefix}).fetchall())
    if not rows:
        fail(f"No active token with prefix {prefix!r}.")
    click.echo(f"Revoked {prefix}...")


def bootstrap_demo_tenant(conn: psycopg.Connection) -> str | None:
    """On a database without tenants, create `demo` and return a new token for it."""
    if conn.execute(queries["count-tenants"]).fetchone()["n"] > 0:
        return None
    tenant = conn.execute(queries["insert-tenant"], {"slug": DEMO_SLUG, "name": "Demo"}).fetchone()
    token, _ = auth.create_token(conn, tenant["id"], DEMO_SCOPES)
    return token.secret


def print_welcome(base_url: str, token: str | None) -> None:
    """Tell the person at the terminal how to reach the service."""
    click.echo(f"\ncontactsync serves on {base_url}")
    if token is None:
        click.echo("Create a token with: .venv/bin/flask --app app tokens create demo "
                   "--scope contacts:write --scope contacts:read\n")
        return
    body = '{"contacts": [{"externalId": "crm-1", "email": "Alice@Example.com", "firstName": "Alice"}]}'
    click.echo(f"Tenant '{DEMO_SLUG}' created. Its token (shown once): {token}\nTry:\n")
    click.echo(f"  curl -sS -X POST {base_url}/contacts/bulk-update \\\n"
               f"    -H 'Authorization: Bearer {token}' \\\n"
               f"    -H 'Content-Type: application/json' \\\n"
               f"    -d {shlex.quote(body)}\n")


@click.command("serve")
@with_appcontext
@click.option("--host", envvar="HOST", default="127.0.0.1", show_default=True)
@click.option("--port", envvar="PORT", default=8000, type=int, show_default=True)
@click.option("--workers", envvar="WEB_CONCURRENCY", default=2, type=int, show_default=True)
def serve_command(host: str, port: int, workers: int) -> None:
    """Apply the schema, make sure a tenant exists, and run gunicorn until stopped."""
    with get_conn() as conn:
        apply_schema(conn)
        with conn.transaction():
            token = bootstrap_demo_tenant(conn)
    current_app.extensions["contactsync.pool"].close()  # the workers open their own

    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    print_welcome(f"http://{shown_host}:{port}", token)
    # The workers reach the same database, embedded or not, through DATABASE_URL.
    env = {**os.environ, "DATABASE_URL": current_app.config["RESOLVED_DATABASE_URL"]}
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}",
         "--workers", str(workers), "--access-logfile", "-", "wsgi:app"],
        env=env)
    signal.signal(signal.SIGTERM, lambda *_: gunicorn.terminate())
    try:
        code = gunicorn.wait()
    except KeyboardInterrupt:  # Ctrl-C reached gunicorn too; let it finish
        code = gunicorn.wait()
    # Leaving now stops the embedded PostgreSQL (if this process started it).
    sys.exit(code if code > 0 else 0)
