"""Operator commands: `contactsync init-db | tenants | tokens | workflows | tasks` (or `flask --app app`).

Every command prints its errors to stderr and exits non-zero on failure.
"""

import logging
import threading
from collections.abc import Callable
from typing import Any

import click
import psycopg
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from app.db import Pool, apply_schema, create_pool, get_conn, pool_of
from app.engine.outbox import count_events
from app.engine.tenants import (
    SLUG_RULE,
    create_tenant,
    find_tenant,
    is_valid_slug,
    lock_webhook_settings,
    update_webhook,
)
from app.engine.tokens import SCOPES, create_token, list_tokens, revoke_tokens
from app.errors import ApiError
from app.workers import dispatcher, runner, tasks, webhooks

tenants_cli = AppGroup("tenants", help="Create tenants and set their webhooks.")
tokens_cli = AppGroup("tokens", help="Create, list and revoke API tokens.")
workflows_cli = AppGroup("workflows", help="Deliver workflow events and report on them.")
tasks_cli = AppGroup("tasks", help="Apply batch tasks in the background.")


def fail(message: str) -> None:
    """Stop the command with a message on stderr and exit status 1."""
    raise click.ClickException(message)


def in_transaction(work: Any) -> Any:
    """Run `work(conn)` in one transaction; database trouble becomes a clean failure."""
    try:
        with get_conn() as conn, conn.transaction():
            return work(conn)
    except ApiError as exc:
        fail(exc.message)
    except psycopg.errors.UniqueViolation:
        fail("That already exists.")


def existing_tenant(conn: psycopg.Connection, slug: str) -> dict:
    """The tenant with this slug, or a clean failure."""
    tenant = find_tenant(conn, slug)
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
    if not is_valid_slug(slug):
        fail(f"A slug is {SLUG_RULE}.")
    tenant = in_transaction(lambda conn: create_tenant(conn, slug, name or slug))
    click.echo(f"Tenant {tenant['slug']} created (id {tenant['id']}).")


@tenants_cli.command("set-webhook")
@click.argument("slug")
@click.argument("url", required=False)
@click.option("--rotate-secret", is_flag=True, help="Replace the signing secret (printed once).")
@click.option("--disable", is_flag=True, help="Stop sending; the URL and secret are kept.")
def set_webhook_command(slug: str, url: str | None, rotate_secret: bool, disable: bool) -> None:
    """Send tenant SLUG's workflow events to URL (default: the URL already set).

    The first URL gets a signing secret, printed alone on the last line; it is
    shown only then and after --rotate-secret.
    """
    if disable and (url or rotate_secret):
        fail("--disable takes no URL and no --rotate-secret.")

    def update(conn: psycopg.Connection) -> tuple[str, str | None]:
        tenant = lock_webhook_settings(conn, slug)
        if tenant is None:
            fail(f"No tenant {slug!r}.")
        target = url or tenant["webhook_url"]
        if target is None:
            fail(f"Tenant {slug} has no webhook URL yet: give one.")
        if not disable:
            try:
                webhooks.check_destination(target, current_app.config["WEBHOOK_ALLOW_PRIVATE"])
            except webhooks.DestinationRefused as exc:
                fail(str(exc))
        secret = webhooks.new_secret() if rotate_secret or tenant["webhook_secret"] is None else None
        update_webhook(conn, tenant["id"], target, secret, enabled=not disable)
        return target, secret

    target, secret = in_transaction(update)
    if disable:
        click.echo(f"Webhook of {slug} disabled; its pending events wait until it is set again.")
        return
    click.echo(f"Workflow events of {slug} go to {target}.")
    if secret is None:
        click.echo("The signing secret is unchanged.")
    else:
        click.echo("Signing secret (shown once; receivers verify webhook-signature with it):")
        click.echo(secret)


@workflows_cli.command("run")
@click.option("--threads", type=int, default=None,
              help="Deliveries at once [default: CONTACTSYNC_WEBHOOK_CONCURRENCY, 4].")
def run_workflows_command(threads: int | None) -> None:
    """Deliver workflow events until SIGTERM or SIGINT (several may run at once)."""
    settings = dispatcher.settings_from_config(current_app.config)
    threads = threads or current_app.config["WEBHOOK_CONCURRENCY"]
    run_in_background("dispatcher", threads, f"Dispatcher delivering workflow events with {threads} threads.",
                      "Dispatcher stopped.", lambda pool, stop: dispatcher.run_loop(pool, settings, stop),
                      lambda pool: dispatcher.purge(pool, settings))


@tasks_cli.command("run")
@click.option("--threads", type=int, default=1, show_default=True,
              help="Chunks applied at once (of different tenants: a tenant's chunks go in order).")
def run_tasks_command(threads: int) -> None:
    """Apply batch tasks until SIGTERM or SIGINT (several may run, on any hosts)."""
    settings = tasks.settings_from_config(current_app.config)
    run_in_background("tasks", threads, f"Task worker applying batch tasks with {threads} threads.",
                      "Task worker stopped.", lambda pool, stop: tasks.run_loop(pool, settings, stop),
                      lambda pool: tasks.purge(pool, settings))


def run_in_background(name: str, threads: int, started: str, stopped: str,
                      loop: Callable[[Pool, threading.Event], None], upkeep: Callable[[Pool], None]) -> None:
    """Run `threads` copies of a worker loop on a pool of their own until signalled."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = current_app.config
    pool_of(current_app).close()  # sized for requests; the threads get theirs
    pool = create_pool(config["RESOLVED_DATABASE_URL"], {**config, "DB_POOL_MIN": 1, "DB_POOL_MAX": threads})
    click.echo(started)
    try:
        runner.run_until_signalled(lambda stop: loop(pool, stop), threads, name, lambda: upkeep(pool))
    finally:
        pool.close()
    click.echo(stopped)


@workflows_cli.command("status")
@click.argument("slug", required=False)
def workflows_status_command(slug: str | None) -> None:
    """Print pending, delivered and dead event counts per tenant (or for SLUG)."""
    rows = in_transaction(lambda conn: count_events(conn, slug))
    if slug is not None and not rows:
        fail(f"No tenant {slug!r}.")
    click.echo(f"{'tenant':<20} {'pending':>8} {'delivered':>10} {'dead':>6}  webhook")
    for row in rows:
        webhook = row["webhook_url"] or "none"
        if row["webhook_url"] and not row["webhook_enabled"]:
            webhook += " (disabled)"
        click.echo(f"{row['slug']:<20} {row['pending']:>8} {row['delivered']:>10} {row['dead']:>6}"
                   f"  {webhook}")


@tokens_cli.command("create")
@click.argument("slug")
@click.option("--scope", "scopes", multiple=True, required=True,
              type=click.Choice(sorted(SCOPES)), help="Repeat for several scopes.")
def create_token_command(slug: str, scopes: tuple[str, ...]) -> None:
    """Create a token for tenant SLUG; the token is printed once, on the last line."""
    token, row = in_transaction(lambda conn: create_token(conn, existing_tenant(conn, slug)["id"],
                                                  list(scopes)))
    click.echo(f"Token {row['prefix']}... for {slug} with {' '.join(row['scopes'])}."
               " It is shown once; store it now:")
    click.echo(token.secret)


@tokens_cli.command("list")
@click.argument("slug")
def list_tokens_command(slug: str) -> None:
    """List tenant SLUG's tokens (prefixes only, never secrets)."""
    rows = in_transaction(lambda conn: list_tokens(conn, existing_tenant(conn, slug)["id"]))
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
    revoked = in_transaction(lambda conn: revoke_tokens(conn, prefix))
    if not revoked:
        fail(f"No active token with prefix {prefix!r}.")
    click.echo(f"Revoked {prefix}...")
