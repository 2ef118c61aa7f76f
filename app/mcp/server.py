"""The MCP server (DESIGN 13): the tools of app/mcp/tools.py over streamable
HTTP, with the API's bearer tokens, or over stdio with CONTACTSYNC_TOKEN.

Over HTTP the SDK's auth middleware asks `TokenTable` about every request's
bearer token: an absent, unknown or revoked one is a 401 with
WWW-Authenticate before any tool runs. A known one carries its tenant and
scopes to the tool, which checks its own scope. Over stdio there is no
header: the token of the environment is checked at start, and again on every
call, so revoking it stops the server's tools too.
"""

import anyio
from flask import Flask
from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from pydantic import AnyHttpUrl

from app.auth import MAX_TOKEN_LENGTH, Principal, authenticate
from app.db import get_conn
from app.engine.tokens import TOKEN_PREFIX
from app.errors import Unauthorized
from app.mcp.tools import ContactTools

NAME = "contactsync"
INSTRUCTIONS = ("Contacts of one tenant: upsert_contacts writes up to 1000 now; bulk_update_contacts "
                "updates up to 1000 by id, username or email in the background (follow it with "
                "get_batch_task); find_contact looks one up; list_contact_changes follows the change feed.")


def principal_of(app: Flask, secret: str) -> Principal:
    """The token's tenant and scopes, checked as the HTTP API checks it; Unauthorized otherwise."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > MAX_TOKEN_LENGTH or not secret.isascii():
        raise Unauthorized("The bearer token is malformed.")
    with app.app_context(), get_conn() as conn:
        return authenticate(conn, secret)


class TokenTable(TokenVerifier):
    """Bearer tokens checked against the API's own token table."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            principal = await anyio.to_thread.run_sync(principal_of, self.app, token)
        except Unauthorized:
            return None
        return AccessToken(token=token, client_id=principal.tenant_slug, scopes=sorted(principal.scopes),
                           claims={"tenant_id": principal.tenant_id})


def http_caller() -> Principal:
    """Who calls over HTTP: the principal the verifier found for this request."""
    token = get_access_token()
    if token is None or token.claims is None:  # the middleware lets no such request through
        raise Unauthorized()
    return Principal(token.claims["tenant_id"], token.client_id, frozenset(token.scopes))


def http_server(app: Flask, public_url: str) -> MCPServer:
    """The server for streamable HTTP at `public_url` (…/mcp)."""
    server = MCPServer(NAME, instructions=INSTRUCTIONS, token_verifier=TokenTable(app),
                       # Our tokens name a tenant, not an audience: TokenTable is the whole check.
                       auth=AuthSettings(issuer_url=AnyHttpUrl(public_url),
                                         resource_server_url=AnyHttpUrl(public_url), required_scopes=[],
                                         validate_token_resource=False))
    ContactTools(app, http_caller).register(server)
    return server


def stdio_server(app: Flask, secret: str) -> MCPServer:
    """The server for stdio, acting for the holder of `secret` (checked on every call)."""
    server = MCPServer(NAME, instructions=INSTRUCTIONS)
    ContactTools(app, lambda: principal_of(app, secret)).register(server)
    return server
