"""The MCP front for AI agents (DESIGN 13): `flask --app app mcp` serves the
tools of app/mcp/tools.py over stdio, or with --http over streamable HTTP
(which `flask --app app serve` starts beside the API). No SQL here."""

import os
import sys

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from app.errors import ApiError

DEFAULT_PORT = 8001


@click.command("mcp")
@click.option("--http", "over_http", is_flag=True,
              help="Serve streamable HTTP at http://HOST:MCP_PORT/mcp instead of stdio.")
@click.option("--host", envvar="MCP_HOST", default="127.0.0.1", show_default=True)
@click.option("--port", envvar="MCP_PORT", default=DEFAULT_PORT, type=int, show_default=True)
@with_appcontext
def mcp_command(over_http: bool, host: str, port: int) -> None:
    """Serve the MCP tools: over stdio with the token in CONTACTSYNC_TOKEN, or over HTTP."""
    from app.mcp import server  # the SDK loads only for this command

    app = current_app._get_current_object()
    if over_http:
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        server.http_server(app, f"http://{shown_host}:{port}/mcp").run(
            transport="streamable-http", host=host, port=port)
        return
    secret = os.environ.get("CONTACTSYNC_TOKEN", "").strip()
    if not secret:
        sys.exit("Set CONTACTSYNC_TOKEN to a contactsync token (flask --app app tokens create ...).")
    try:
        server.principal_of(app, secret)
    except ApiError as exc:  # stdout is the protocol's: the reason goes to stderr
        sys.exit(f"CONTACTSYNC_TOKEN: {exc.message}")
    server.stdio_server(app, secret).run(transport="stdio")


def init_app(app: Flask) -> None:
    """Register the `mcp` command on the app."""
    app.cli.add_command(mcp_command)
